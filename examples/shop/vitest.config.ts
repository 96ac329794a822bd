import { mergeConfig } from 'vitest/config'
import { ballastProject } from '../../vitest.shared.js'

// One shop (a dozen Node processes) is started for all test files, which run one after another.
export default mergeConfig(ballastProject('@ballast/shop'), {
  test: { fileParallelism: false, globalSetup: ['test/globalSetup.ts'] },
})

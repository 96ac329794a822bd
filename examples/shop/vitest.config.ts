import { mergeConfig } from 'vitest/config'
import { ballastProject } from '../../vitest.shared.js'

// Each test file starts a whole shop (a dozen Node processes): run the files one after another.
export default mergeConfig(ballastProject('@ballast/shop'), { test: { fileParallelism: false } })

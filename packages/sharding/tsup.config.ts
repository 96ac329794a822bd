import { ballastTsup } from '../../tsup.shared.js'

// The CLI (`bin` ballast-reshard) is an entry of its own: dist/ballast-reshard.js.
export default ballastTsup([], {
  entry: { index: 'src/index.ts', 'ballast-reshard': 'src/cli/bin.ts' },
})

export { LOCAL_ADDRESSES, useServerAddresses } from './addresses.js'
export type { Block, Example } from './extract.js'
export {
  COMPILE_ONLY,
  extractBlocks,
  findBlocks,
  LANGUAGES,
  readmeLine,
  readmePaths,
  writeExamples,
} from './extract.js'
export { locateError } from './locate.js'
export { activeResources, leftOpen, settle } from './resources.js'
export { typecheck } from './typecheck.js'

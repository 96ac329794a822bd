// Helpers that need vitest's `vi`: a subpath of their own, so the benches and the shop, which
// import the main entry outside vitest, never load vitest.
export { captureListenerErrors } from './listenerErrors.js'

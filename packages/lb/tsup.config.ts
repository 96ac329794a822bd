import { ballastTsup } from '../../tsup.shared.js'

// @ballast/shared is private: bundle it, so users see no extra ballast dependency.
export default ballastTsup(['src/index.ts'], { noExternal: ['@ballast/shared'] })

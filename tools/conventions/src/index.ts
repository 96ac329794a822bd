export { ALLOWLIST, type Allowance, isAllowed } from './allowlist.js'
export { checkEmitters, checkStats, OUTCOME_NOUNS } from './api.js'
export { checkDefaults, defaultsName } from './defaults.js'
export {
  checkErrors,
  ERROR_NAMING,
  type ErrorNaming,
  expectedCode,
  type LoadModule,
} from './errors.js'
export { checkEvents } from './events.js'
export { checkDurationExport, checkOptions, type OptionsReport, sharedDuration } from './options.js'
export { checkSharedCode, SHARED_HELPERS } from './sharedCode.js'
export {
  createSurface,
  exportsOf,
  formatViolation,
  listPackages,
  type PackageInfo,
  REPO_ROOT,
  RULES,
  type RuleId,
  readPackage,
  type Surface,
  type Violation,
} from './surface.js'
export { ADAPTER_SUBPATHS, checkAdapters, checkBuiltDeclarations } from './surfaceRules.js'
export * from './words.js'

import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import ts from 'typescript'

/** One published package, as the checks see it. */
export interface PackageInfo {
  /** The folder name under `packages/`: `cache`, `lb`, `mq`, `resilience`, `session`, `sharding`. */
  name: string
  /** The npm name, `@ballast/<name>`. */
  npmName: string
  /** Absolute folder of the package. */
  dir: string
  /** Each entry point of package.json `exports` (`.`, `./express`, ...) and its source file. */
  entries: Map<string, string>
}

/** A violation of a rule of docs/CONVENTIONS.md. */
export interface Violation {
  /** The package, such as `lb`. */
  pkg: string
  /** What breaks the rule: an exported symbol and the path inside it (`HealthCheckOptions.intervalMs`). */
  symbol: string
  /** The rule, as named in {@link RULES}. */
  rule: RuleId
  /** What is wrong, in words a helper can act on. */
  message: string
}

/** The rules the checks apply, each with the CONVENTIONS.md section that states it. */
export const RULES = {
  'option-unit-suffix': 'Durations: no unit in option names',
  'option-duration': 'Durations: a time option has the package Duration type',
  'options-default':
    'Options: one exported DEFAULT_<SUBJECT>_OPTIONS per <Subject>Options, frozen, every field with a @default tag that matches it',
  'duration-export': 'Durations: one Duration type, exported from each package (the shared one)',
  'error-code': 'Errors: code is E_<PACKAGE>_<WHAT>, derived from the class name',
  'error-retryable': 'Errors: retryable is a boolean',
  'error-cause': 'Errors: every constructor takes a last options argument with cause',
  'error-base':
    'Errors: one base class <Package>Error, in the errors map, that every class extends',
  'error-closed': 'Errors: one <Package>ClosedError, E_<PACKAGE>_CLOSED, never retryable',
  'errors-map': 'Errors: an errors map of every class',
  'event-name': 'Events: names are kebab-case, past tense, never error',
  'event-payload': 'Events: one payload, an object, typed as <Name>Event',
  'emitter-api':
    'Events: on() and once() return a function that removes the listener; off() exists too',
  'stats-name':
    'Stats: how it ended is a past participle (failed, rejected, timedOut), never failures or errors',
  'adapter-name': 'Framework adapters: <framework><Feature> per adapter',
  'shared-code':
    'Shared code: the duration parser, the validation helpers and the emitter live once, in @ballast/shared',
  'no-internal-in-dts': 'Public surface: nothing marked @internal reaches a .d.ts',
} as const

/** The name of a rule. */
export type RuleId = keyof typeof RULES

/** One line per violation: package, symbol, what is wrong and the rule, so a helper can fix it. */
export function formatViolation(v: Violation): string {
  return `${v.pkg}: ${v.symbol}: ${v.message} [${v.rule}: ${RULES[v.rule]}]`
}

/** The repository root (the folder holding pnpm-workspace.yaml). */
export const REPO_ROOT = resolve(dirname(new URL(import.meta.url).pathname), '../../..')

/** The packages under `<root>/packages`, with their entry points read from package.json `exports`. */
export function listPackages(root = REPO_ROOT): PackageInfo[] {
  const base = join(root, 'packages')
  return readdirSync(base, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(base, d.name, 'package.json')))
    .map((d) => readPackage(join(base, d.name)))
    .sort((a, b) => a.name.localeCompare(b.name))
}

/** A package folder's entry points: each `exports` subpath with a `@ballast/source` file. */
export function readPackage(dir: string): PackageInfo {
  const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
    name: string
    exports?: Record<string, unknown>
  }
  const entries = new Map<string, string>()
  for (const [subpath, target] of Object.entries(manifest.exports ?? {})) {
    if (target === null || typeof target !== 'object') continue
    const source = (target as Record<string, unknown>)['@ballast/source']
    if (typeof source === 'string') entries.set(subpath, resolve(dir, source))
  }
  const name = dir.split(/[\\/]/).pop() as string
  return { name, npmName: manifest.name, dir, entries }
}

/** A TypeScript program over every entry point of the given packages, and its checker. */
export interface Surface {
  program: ts.Program
  checker: ts.TypeChecker
}

/**
 * Compiles the entry points of `packages` (and what they import) with the repository's
 * compiler options, so `@ballast/shared` and workspace packages resolve to their sources.
 */
export function createSurface(packages: PackageInfo[], root = REPO_ROOT): Surface {
  const configPath = join(root, 'tsconfig.base.json')
  const config = ts.readConfigFile(configPath, ts.sys.readFile)
  const parsed = ts.parseJsonConfigFileContent(config.config, ts.sys, root)
  // The one Duration type is read from tools/shared even when no package imports it yet.
  const shared = join(root, 'tools', 'shared', 'src', 'duration.ts')
  const rootNames = [...packages.flatMap((p) => [...p.entries.values()]), shared]
  const program = ts.createProgram({
    rootNames,
    options: { ...parsed.options, noEmit: true },
  })
  return { program, checker: program.getTypeChecker() }
}

/** The exported symbols of one entry file, aliases resolved, sorted by name. */
export function exportsOf(surface: Surface, file: string): ts.Symbol[] {
  const source = surface.program.getSourceFile(file)
  if (!source) throw new Error(`${file} is not in the program`)
  const moduleSymbol = surface.checker.getSymbolAtLocation(source)
  if (!moduleSymbol) return []
  return surface.checker
    .getExportsOfModule(moduleSymbol)
    .slice()
    .sort((a, b) => a.name.localeCompare(b.name))
}

/** The symbol an export names, following `export { x } from` and `import`/`export` aliases. */
export function target(surface: Surface, symbol: ts.Symbol): ts.Symbol {
  return symbol.flags & ts.SymbolFlags.Alias ? surface.checker.getAliasedSymbol(symbol) : symbol
}

/** Whether a declaration lives in the package's own sources or in tools/shared. */
export function isOwnDeclaration(pkg: PackageInfo, node: ts.Node, root = REPO_ROOT): boolean {
  const file = resolve(node.getSourceFile().fileName)
  return (
    file.startsWith(join(pkg.dir, 'src')) || file.startsWith(join(root, 'tools', 'shared', 'src'))
  )
}

import ts from 'typescript'
import { exportsOf, type PackageInfo, type Surface, target, type Violation } from './surface.js'
import { screamingSnake } from './words.js'

/** How a package names its errors: the code prefix and the package words a class name may start with. */
export interface ErrorNaming {
  /** `<PACKAGE>` of `E_<PACKAGE>_<WHAT>`. */
  prefix: string
  /** Leading words dropped from a class name before `<WHAT>`, the package's own first (`Sharding`, `Shard`). */
  words: readonly string[]
}

/** The six packages' error naming, from CONVENTIONS.md's Errors rule. */
export const ERROR_NAMING: Readonly<Record<string, ErrorNaming>> = {
  cache: { prefix: 'CACHE', words: ['Cache'] },
  lb: { prefix: 'LB', words: ['Lb'] },
  mq: { prefix: 'MQ', words: ['Mq'] },
  resilience: { prefix: 'RESILIENCE', words: ['Resilience'] },
  session: { prefix: 'SESSION', words: ['Session'] },
  sharding: { prefix: 'SHARD', words: ['Sharding', 'Shard'] },
}

/**
 * The code a class must have: `E_<PACKAGE>_<WHAT>`, `<WHAT>` the class name without `Error` and
 * without a leading package word, in SCREAMING_SNAKE (`LoaderTimeoutError` → `E_CACHE_LOADER_TIMEOUT`,
 * `ShardKeyMissingError` → `E_SHARD_KEY_MISSING`). `undefined` for the base class (`CacheError`).
 */
export function expectedCode(className: string, naming: ErrorNaming): string | undefined {
  let what = className.replace(/Error$/, '')
  for (const word of naming.words) {
    if (what === word) return undefined
    if (what.startsWith(word) && /^[A-Z0-9]/.test(what.slice(word.length))) {
      what = what.slice(word.length)
      break
    }
  }
  return what === '' ? undefined : `E_${naming.prefix}_${screamingSnake(what)}`
}

const NULLISH = ts.TypeFlags.Undefined | ts.TypeFlags.Null | ts.TypeFlags.Void

/** A value of `type` good enough to construct an error with (a string for a string, `{}` filled for an object). */
function sample(checker: ts.TypeChecker, type: ts.Type, depth = 0): unknown {
  if (type.isUnion()) {
    const member = type.types.find((t) => !(t.flags & NULLISH))
    return member ? sample(checker, member, depth) : undefined
  }
  if (type.isStringLiteral() || type.isNumberLiteral()) return type.value
  if (type.flags & ts.TypeFlags.StringLike) return 'sample'
  if (type.flags & ts.TypeFlags.NumberLike) return 1
  if (type.flags & ts.TypeFlags.BooleanLike) return false
  if (type.flags & ts.TypeFlags.BigIntLike) return 1n
  if (type.flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) return 'sample'
  if (checker.isArrayType(type) || checker.isTupleType(type)) return []
  if (type.getCallSignatures().length > 0) return () => undefined
  if (type.flags & ts.TypeFlags.Object) {
    if (type.getProperty('message') && type.getProperty('stack')) return new Error('sample')
    if (depth > 3) return {}
    const value: Record<string, unknown> = {}
    for (const property of type.getProperties()) {
      if (property.flags & ts.SymbolFlags.Optional) continue
      value[property.name] = sample(checker, checker.getTypeOfSymbol(property), depth + 1)
    }
    return value
  }
  return undefined
}

/** The module a loader returns: the package's main entry, imported from its sources. */
export type LoadModule = (file: string) => Promise<Record<string, unknown>>

type ErrorClass = new (...args: unknown[]) => Error & Record<string, unknown>

/**
 * Rule 3 over the package's `errors` map (imported from its sources): one base class
 * `<Package>Error` every class extends, with its `is<Package>Error` guard; each code derived from
 * the class name; `retryable` a boolean; a last constructor argument with `cause`, which the
 * error keeps; one `<Package>ClosedError`, never retryable; every exported error class in the map.
 */
export async function checkErrors(
  surface: Surface,
  pkg: PackageInfo,
  load: LoadModule,
  naming: ErrorNaming | undefined = ERROR_NAMING[pkg.name],
): Promise<Violation[]> {
  const { checker } = surface
  const main = pkg.entries.get('.')
  if (!naming || !main) return []
  const violations: Violation[] = []
  const report = (symbol: string, rule: Violation['rule'], message: string) =>
    violations.push({ pkg: pkg.name, symbol, rule, message })

  const mod = await load(main)
  const errors = mod.errors as Record<string, ErrorClass> | undefined
  if (!errors || typeof errors !== 'object') {
    report('errors', 'errors-map', 'src/index.ts exports no `errors` map of its error classes')
    return violations
  }
  const word = naming.words[0] as string
  const baseName = `${word}Error`
  const base = errors[baseName]
  if (typeof base !== 'function') {
    report(baseName, 'error-base', `the errors map has no base class \`${baseName}\``)
  }
  const guardName = `is${word}Error`
  const guard = mod[guardName] as ((e: unknown) => boolean) | undefined
  if (typeof guard !== 'function') {
    report(guardName, 'error-base', `src/index.ts exports no \`${guardName}()\` guard`)
  }

  const errorsExport = exportsOf(surface, main).find((s) => s.name === 'errors')
  const mapType = errorsExport && checker.getTypeOfSymbol(target(surface, errorsExport))

  const seen = new Set<unknown>()
  for (const [key, cls] of Object.entries(errors)) {
    if (typeof cls !== 'function') {
      report(`errors.${key}`, 'errors-map', 'is not a class')
      continue
    }
    if (seen.has(cls)) continue // a deprecated alias: the same class object as its target
    seen.add(cls)
    const name = cls.name
    if (key !== name && errors[name] !== cls) {
      report(
        `errors.${key}`,
        'errors-map',
        `is the class \`${name}\`, which the map does not list under its own name`,
      )
    }
    if (base && cls !== base && !(cls.prototype instanceof base)) {
      report(name, 'error-base', `does not extend \`${baseName}\``)
    }

    // The constructor, as declared: the longest signature, its last parameter the options.
    const property = mapType?.getProperty(key)
    const signatures = property ? checker.getTypeOfSymbol(property).getConstructSignatures() : []
    const signature = signatures.reduce<ts.Signature | undefined>(
      (best, s) => (!best || s.parameters.length > best.parameters.length ? s : best),
      undefined,
    )
    const parameters = signature?.parameters ?? []
    const last = parameters[parameters.length - 1]
    const lastType = last && checker.getNonNullableType(checker.getTypeOfSymbol(last))
    const takesCause = lastType !== undefined && lastType.getProperty('cause') !== undefined
    if (!takesCause) {
      const shown = parameters.map((p) => p.name).join(', ')
      report(
        name,
        'error-cause',
        `constructor(${shown}) has no last options argument with \`cause\`: add \`options: { cause?: unknown } = {}\``,
      )
    }
    const cause = new Error('the cause')
    const args = parameters.map((p, i) => {
      const type = checker.getTypeOfSymbol(p)
      if (i === parameters.length - 1 && takesCause) {
        const rest = sample(checker, checker.getNonNullableType(type)) as Record<string, unknown>
        return { ...rest, cause }
      }
      return sample(checker, type)
    })

    let instance: (Error & Record<string, unknown>) | undefined
    try {
      instance = new cls(...args)
    } catch (error) {
      report(
        name,
        'error-base',
        `could not be constructed from its declared parameters: ${String(error)}`,
      )
      continue
    }
    if (instance.name !== name) {
      report(
        name,
        'error-base',
        `instances are named \`${String(instance.name)}\`, not \`${name}\``,
      )
    }
    if (guard && guard(instance) !== true) {
      report(name, 'error-base', `\`${guardName}()\` does not recognise an instance`)
    }
    const code = expectedCode(name, naming)
    if (code !== undefined && instance.code !== code) {
      report(
        name,
        'error-code',
        `code is ${JSON.stringify(instance.code)}, expected "${code}" (rename the code or the class)`,
      )
    }
    if (typeof instance.retryable !== 'boolean') {
      report(name, 'error-retryable', `retryable is ${typeof instance.retryable}, not a boolean`)
    }
    if (takesCause && instance.cause !== cause) {
      report(name, 'error-cause', 'the `cause` given to the constructor is not the error’s `cause`')
    }
    if (name === `${word}ClosedError` && instance.retryable !== false) {
      report(name, 'error-closed', 'is retryable: a closed object is not an outage')
    }
  }

  const closed = `${word}ClosedError`
  if (typeof errors[closed] !== 'function') {
    report(closed, 'error-closed', `the errors map has no \`${closed}\``)
  }
  if (guard && guard(new Error('plain')) !== false) {
    report(guardName, 'error-base', 'holds for a plain Error')
  }

  // Every error class the package exports is in the map.
  const listed = new Set<unknown>(Object.values(errors))
  for (const [exportName, value] of Object.entries(mod)) {
    if (typeof value !== 'function' || listed.has(value)) continue
    const proto = (value as { prototype?: unknown }).prototype
    if (proto instanceof Error) {
      report(exportName, 'errors-map', 'is an exported error class missing from the `errors` map')
    }
  }
  return violations
}

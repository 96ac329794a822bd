import ts from 'typescript'
import type { LoadModule } from './errors.js'
import { exportsOf, type PackageInfo, type Surface, target, type Violation } from './surface.js'
import { screamingSnake } from './words.js'

/** `DEFAULT_<SUBJECT>_OPTIONS` of `<Subject>Options`: `ExpressRateLimitOptions` → `DEFAULT_EXPRESS_RATE_LIMIT_OPTIONS`. */
export function defaultsName(optionsName: string): string {
  return `DEFAULT_${screamingSnake(optionsName.replace(/Options$/, ''))}_OPTIONS`
}

/** The value a `@default` tag writes, when it is one literal (`1000`, `'30s'`, `false`); otherwise `NOT_LITERAL`. */
const NOT_LITERAL = Symbol('not a literal')
function literal(text: string): unknown {
  const t = text
    .trim()
    .replace(/^`(.*)`$/s, '$1')
    .trim()
  if (/^-?\d[\d_]*(?:\.\d+)?(?:e\d+)?$/i.test(t)) return Number(t.replaceAll('_', ''))
  if (/^'[^']*'$/.test(t) || /^"[^"]*"$/.test(t)) return t.slice(1, -1)
  if (t === 'true') return true
  if (t === 'false') return false
  if (t === 'undefined') return undefined
  if (t === 'null') return null
  return NOT_LITERAL
}

/**
 * The Options rule's defaults, on every exported `<Subject>Options` (error options excepted: they
 * carry a cause, not settings; and the shared `TelemetryOptions` mixin, whose providers default
 * to the global ones at construction, not to a constant): one exported `DEFAULT_<SUBJECT>_OPTIONS` beside it, frozen, and
 * each field it sets documented with a `@default` tag that, when it is a literal, equals it.
 */
export async function checkDefaults(
  surface: Surface,
  pkg: PackageInfo,
  load: LoadModule,
): Promise<Violation[]> {
  const { checker } = surface
  const violations: Violation[] = []
  const report = (symbol: string, message: string) =>
    violations.push({ pkg: pkg.name, symbol, rule: 'options-default', message })
  const done = new Set<string>()
  for (const [, file] of pkg.entries) {
    const exported = exportsOf(surface, file)
    const names = new Set(exported.map((s) => s.name))
    let mod: Record<string, unknown> | undefined
    for (const symbol of exported) {
      const name = symbol.name
      if (
        !name.endsWith('Options') ||
        name.endsWith('ErrorOptions') ||
        name === 'TelemetryOptions' ||
        done.has(name)
      )
        continue
      const options = target(surface, symbol)
      if (!(options.flags & (ts.SymbolFlags.Interface | ts.SymbolFlags.TypeAlias))) continue
      done.add(name)
      const wanted = defaultsName(name)
      if (!names.has(wanted)) {
        report(
          name,
          `has no exported \`${wanted}\` beside it (frozen, each field with a matching @default)`,
        )
        continue
      }
      mod ??= await load(file)
      const defaults = mod[wanted]
      if (defaults === null || typeof defaults !== 'object') {
        report(wanted, 'is not an object')
        continue
      }
      if (!Object.isFrozen(defaults)) report(wanted, 'is not frozen: `Object.freeze()` it')
      for (const property of checker.getPropertiesOfType(
        checker.getDeclaredTypeOfSymbol(options),
      )) {
        if (!Object.hasOwn(defaults, property.name)) continue
        const tag = property.getJsDocTags(checker).find((t) => t.name === 'default')
        if (!tag) {
          report(`${name}.${property.name}`, `has no @default tag (${wanted} sets it)`)
          continue
        }
        const written = literal(ts.displayPartsToString(tag.text))
        const actual = (defaults as Record<string, unknown>)[property.name]
        if (written !== NOT_LITERAL && !Object.is(written, actual)) {
          report(
            `${name}.${property.name}`,
            `says @default ${ts.displayPartsToString(tag.text).trim()}, but ${wanted} has ${JSON.stringify(actual)}`,
          )
        }
      }
    }
  }
  return violations
}

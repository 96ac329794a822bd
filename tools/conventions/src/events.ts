import ts from 'typescript'
import { exportsOf, type PackageInfo, type Surface, target, type Violation } from './surface.js'
import { isPastTense, KEBAB_CASE, pascal } from './words.js'

/** The name a type node refers to (`EjectedEvent` for `EjectedEvent<T>`), if it is a reference. */
function referencedName(node: ts.TypeNode | undefined): string | undefined {
  if (!node || !ts.isTypeReferenceNode(node)) return undefined
  const name = node.typeName
  return ts.isIdentifier(name) ? name.text : name.right.text
}

/**
 * Rule 4 over every exported `*Events` map of every entry point of `pkg`: each event name is
 * kebab-case and past tense, never `error`; each payload is one object (not a primitive, not a
 * tuple of arguments) of a named event type, `<Name>Event` (`'endpoint-added': EndpointAddedEvent`;
 * events that carry the same fields may share one, such as `BreakerStateEvent`): not an inline
 * object literal, not a domain object such as the `Endpoint` itself.
 */
export function checkEvents(surface: Surface, pkg: PackageInfo): Violation[] {
  const { checker } = surface
  const violations: Violation[] = []
  const done = new Set<ts.Symbol>()
  for (const [, file] of pkg.entries) {
    for (const exported of exportsOf(surface, file)) {
      if (!exported.name.endsWith('Events')) continue
      const symbol = target(surface, exported)
      if (done.has(symbol)) continue
      done.add(symbol)
      if (!(symbol.flags & (ts.SymbolFlags.Interface | ts.SymbolFlags.TypeAlias))) continue
      const map = checker.getDeclaredTypeOfSymbol(symbol)
      for (const property of checker.getPropertiesOfType(map)) {
        const event = property.name
        const where = `${exported.name}['${event}']`
        const report = (rule: Violation['rule'], message: string) =>
          violations.push({ pkg: pkg.name, symbol: where, rule, message })
        if (event === 'error') {
          report(
            'event-name',
            'is named `error` (node:events throws it when nobody listens): say what failed, such as `publish-failed`',
          )
        } else if (!KEBAB_CASE.test(event)) {
          report('event-name', 'is not kebab-case (lowercase words joined by hyphens)')
        } else if (!isPastTense(event)) {
          report(
            'event-name',
            'is not past tense: end with a past participle (`opened`, `endpoint-added`, `connection-lost`)',
          )
        }

        const payload = checker.getNonNullableType(checker.getTypeOfSymbol(property))
        const shown = checker.typeToString(payload)
        if (checker.isTupleType(payload) || checker.isArrayType(payload)) {
          report('event-payload', `payload is a list of arguments \`${shown}\`: emit one object`)
          continue
        }
        if (!(payload.flags & ts.TypeFlags.Object) || payload.getCallSignatures().length > 0) {
          report('event-payload', `payload \`${shown}\` is not an object`)
          continue
        }
        const decl = property.declarations?.[0]
        const typeNode = decl && ts.isPropertySignature(decl) ? decl.type : undefined
        const named = referencedName(typeNode)
        if (!named?.endsWith('Event')) {
          const wanted = `${pascal(event)}Event`
          report(
            'event-payload',
            named
              ? `payload is typed \`${named}\`, not an event object: type it \`${wanted}\``
              : `payload is typed inline (\`${shown}\`): declare and export \`interface ${wanted}\``,
          )
        }
      }
    }
  }
  return violations
}

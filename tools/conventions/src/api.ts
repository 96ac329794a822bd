import ts from 'typescript'
import {
  exportsOf,
  isOwnDeclaration,
  type PackageInfo,
  type Surface,
  target,
  type Violation,
} from './surface.js'
import { words } from './words.js'

/** Exported classes and interfaces of every entry point, once each, with the name they are exported as. */
function exportedObjects(surface: Surface, pkg: PackageInfo): Array<[string, ts.Type]> {
  const found: Array<[string, ts.Type]> = []
  const done = new Set<ts.Symbol>()
  for (const [, file] of pkg.entries) {
    for (const exported of exportsOf(surface, file)) {
      const symbol = target(surface, exported)
      if (done.has(symbol) || !(symbol.flags & (ts.SymbolFlags.Class | ts.SymbolFlags.Interface))) {
        continue
      }
      done.add(symbol)
      found.push([exported.name, surface.checker.getDeclaredTypeOfSymbol(symbol)])
    }
  }
  return found
}

/** The call signatures of a member of `type`, or none. */
function signaturesOf(surface: Surface, type: ts.Type, member: string): readonly ts.Signature[] {
  const property = type.getProperty(member)
  return property ? surface.checker.getTypeOfSymbol(property).getCallSignatures() : []
}

/** Whether every signature returns a function (the unsubscribe function). */
function returnsFunction(surface: Surface, signatures: readonly ts.Signature[]): boolean {
  return signatures.every((s) => {
    const returned = surface.checker.getNonNullableType(surface.checker.getReturnTypeOfSignature(s))
    return returned.getCallSignatures().length > 0
  })
}

/**
 * The emitter part of the Events rule, on every exported class or interface with an
 * `on(event, listener)` method: `on()` and `once()` return a function that removes the
 * listener, and `off()` exists.
 */
export function checkEmitters(surface: Surface, pkg: PackageInfo): Violation[] {
  const violations: Violation[] = []
  for (const [name, type] of exportedObjects(surface, pkg)) {
    const on = signaturesOf(surface, type, 'on')
    if (!on.some((s) => s.parameters.length >= 2)) continue
    const report = (member: string, message: string) =>
      violations.push({ pkg: pkg.name, symbol: `${name}.${member}`, rule: 'emitter-api', message })
    const shown = (s: readonly ts.Signature[]) =>
      s
        .map((x) => surface.checker.typeToString(surface.checker.getReturnTypeOfSignature(x)))
        .join(' | ')
    if (!returnsFunction(surface, on)) {
      report('on', `returns \`${shown(on)}\`: return the function that removes the listener`)
    }
    const once = signaturesOf(surface, type, 'once')
    if (once.length === 0)
      report('once', 'is missing: add once(), returning the function that removes the listener')
    else if (!returnsFunction(surface, once)) {
      report('once', `returns \`${shown(once)}\`: return the function that removes the listener`)
    }
    if (signaturesOf(surface, type, 'off').length === 0)
      report('off', 'is missing: add off(event, listener)')
  }
  return violations
}

/** Last words of a counter that name an outcome as a noun, with the participle to use instead. */
export const OUTCOME_NOUNS: Readonly<Record<string, string>> = {
  failures: 'failed',
  errors: 'failed',
  successes: 'succeeded',
  rejects: 'rejected',
  rejections: 'rejected',
  timeouts: 'timedOut',
  opens: 'opened',
  closes: 'closed',
  fallbacks: 'fellBack',
}

/**
 * The Stats rule, on the result of every exported `stats()` method (nested objects included):
 * how a unit of work ended is a past participle (`failed`, `rejected`, `timedOut`), never a
 * noun (`failures`, `errors`, `rejects`, `timeouts`); a prefix keeps (`decodeErrors` →
 * `decodeFailed`).
 */
export function checkStats(surface: Surface, pkg: PackageInfo): Violation[] {
  const { checker } = surface
  const violations: Violation[] = []
  const reported = new Set<ts.Node>()
  const walk = (type: ts.Type, path: string, depth: number) => {
    if (depth > 4) return
    for (const property of checker.getPropertiesOfType(type)) {
      const decl = property.declarations?.[0]
      if (!decl || !isOwnDeclaration(pkg, decl)) continue
      const parts = words(property.name)
      const last = (parts.pop() ?? '').toLowerCase()
      const participle = OUTCOME_NOUNS[last]
      if (participle && !reported.has(decl)) {
        reported.add(decl)
        const better =
          parts.length === 0
            ? participle
            : `${parts.join('')}${participle.charAt(0).toUpperCase()}${participle.slice(1)}`
        const owner = decl.parent
        const symbol =
          owner && ts.isInterfaceDeclaration(owner)
            ? `${owner.name.text}.${property.name}`
            : `${path}.${property.name}`
        violations.push({
          pkg: pkg.name,
          symbol,
          rule: 'stats-name',
          message: `counts an outcome with a noun: name it \`${better}\`, the past participle`,
        })
      }
      const value = checker.getNonNullableType(checker.getTypeOfSymbol(property))
      for (const member of value.isUnion() ? value.types : [value]) {
        if (
          member.flags & ts.TypeFlags.Object &&
          !checker.isArrayType(member) &&
          member.getCallSignatures().length === 0
        ) {
          walk(member, `${path}.${property.name}`, depth + 1)
        }
      }
    }
  }
  for (const [name, type] of exportedObjects(surface, pkg)) {
    for (const signature of signaturesOf(surface, type, 'stats')) {
      const returned = checker.getNonNullableType(checker.getReturnTypeOfSignature(signature))
      const awaited = checker.getAwaitedType(returned) ?? returned
      walk(awaited, `${name}.stats()`, 0)
    }
  }
  return violations
}

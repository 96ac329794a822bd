import { join, resolve } from 'node:path'
import ts from 'typescript'
import {
  exportsOf,
  isOwnDeclaration,
  type PackageInfo,
  REPO_ROOT,
  type Surface,
  target,
  type Violation,
} from './surface.js'
import { hasUnitSuffix, MILLISECONDS_DOC, saysTime } from './words.js'

/** The file that declares the one `Duration` type. */
export function sharedDurationFile(root = REPO_ROOT): string {
  return join(root, 'tools', 'shared', 'src', 'duration.ts')
}

/** The shared `Duration` type, read from tools/shared. */
export function sharedDuration(surface: Surface, root = REPO_ROOT): ts.Type {
  const file = surface.program.getSourceFile(sharedDurationFile(root))
  const moduleSymbol = file && surface.checker.getSymbolAtLocation(file)
  const symbol =
    moduleSymbol &&
    surface.checker.getExportsOfModule(moduleSymbol).find((s) => s.name === 'Duration')
  if (!symbol) throw new Error(`tools/shared/src/duration.ts exports no Duration`)
  return surface.checker.getDeclaredTypeOfSymbol(symbol)
}

const SCALAR =
  ts.TypeFlags.NumberLike | ts.TypeFlags.StringLike | ts.TypeFlags.Any | ts.TypeFlags.Unknown

/** Members of a union, or the type itself. */
function members(type: ts.Type): readonly ts.Type[] {
  return type.isUnion() ? type.types : [type]
}

/**
 * Why a time option's type is not the Duration type, or `undefined` when it is (or when the
 * property is not a scalar at all: a nested group of options such as `window: { duration }`, or
 * a callback, is checked through its own properties).
 */
function durationProblem(surface: Surface, duration: ts.Type, type: ts.Type): string | undefined {
  const { checker } = surface
  const given = checker.getNonNullableType(type)
  if (!members(given).some((m) => m.flags & SCALAR)) return undefined
  const shown = checker.typeToString(given)
  if (!checker.isTypeAssignableTo(duration, given)) {
    return `is a time but typed \`${shown}\`: give it the package's Duration type (a number of milliseconds or a string with a unit, '30s')`
  }
  if (checker.isTypeAssignableTo(checker.getStringType(), given)) {
    return `is a time but typed \`${shown}\`, which takes any string: give it the package's Duration type`
  }
  return undefined
}

/** Whether a type is a group of options to look into (not a function, array, class or a service with methods). */
function isOptionGroup(pkg: PackageInfo, type: ts.Type): boolean {
  if (!(type.flags & ts.TypeFlags.Object)) return false
  if (type.getCallSignatures().length > 0 || type.getConstructSignatures().length > 0) return false
  const symbol = type.getSymbol()
  const decl = symbol?.declarations?.[0]
  if (!symbol || !decl || !isOwnDeclaration(pkg, decl)) return false
  if (symbol.flags & ts.SymbolFlags.Class) return false
  const props = type.getProperties()
  return !props.some((p) =>
    p.declarations?.some((d) => ts.isMethodSignature(d) || ts.isMethodDeclaration(d)),
  )
}

/** The name a property is reported under: its declaring named type, else the path that reached it. */
function reportedName(property: ts.Symbol, path: string): string {
  const decl = property.declarations?.[0]
  const owner = decl?.parent
  if (owner && ts.isInterfaceDeclaration(owner)) return `${owner.name.text}.${property.name}`
  if (owner && ts.isTypeLiteralNode(owner) && ts.isTypeAliasDeclaration(owner.parent)) {
    return `${owner.parent.name.text}.${property.name}`
  }
  return path
}

/** The result of {@link checkOptions}: violations, and whether any option is a time. */
export interface OptionsReport {
  violations: Violation[]
  /** Whether the package takes any duration option (so it must export `Duration`). */
  takesDurations: boolean
}

/**
 * Rules 1 and 2 over every exported `*Options` type of every entry point of `pkg` and the groups
 * of options nested in them: no unit suffix in an option name, and a time option has the
 * `Duration` type.
 */
export function checkOptions(surface: Surface, pkg: PackageInfo, root = REPO_ROOT): OptionsReport {
  const { checker } = surface
  const duration = sharedDuration(surface, root)
  const violations: Violation[] = []
  const reported = new Set<ts.Node>()
  const visited = new Set<ts.Type>()
  let takesDurations = false

  const walk = (type: ts.Type, path: string, depth: number) => {
    if (depth > 6 || visited.has(type)) return
    visited.add(type)
    for (const property of checker.getPropertiesOfType(type)) {
      const decl = property.declarations?.[0]
      if (!decl || !isOwnDeclaration(pkg, decl, root)) continue
      const propertyPath = `${path}.${property.name}`
      const propertyType = checker.getTypeOfSymbol(property)
      const first = !reported.has(decl)
      reported.add(decl)
      const symbol = reportedName(property, propertyPath)
      if (first && hasUnitSuffix(property.name)) {
        violations.push({
          pkg: pkg.name,
          symbol,
          rule: 'option-unit-suffix',
          message: `option name ends in a unit: name it without the suffix (\`${property.name.replace(/(Ms|Msecs?|Millis|Milliseconds|Secs?|Seconds|Mins?|Minutes|Hrs?|Hours|Days|Micros|Microseconds|Nanos|Nanoseconds)$/, '')}\`) and type it Duration`,
        })
      }
      const doc = ts.displayPartsToString(property.getDocumentationComment(checker))
      if (saysTime(property.name) || MILLISECONDS_DOC.test(doc)) {
        const problem = durationProblem(surface, duration, propertyType)
        const scalar = members(checker.getNonNullableType(propertyType)).some(
          (m) => m.flags & SCALAR,
        )
        if (scalar) takesDurations = true
        if (first && problem && !hasUnitSuffix(property.name)) {
          violations.push({ pkg: pkg.name, symbol, rule: 'option-duration', message: problem })
        }
      }
      for (const member of members(checker.getNonNullableType(propertyType))) {
        if (isOptionGroup(pkg, member)) walk(member, propertyPath, depth + 1)
      }
    }
  }

  for (const [, file] of pkg.entries) {
    for (const exported of exportsOf(surface, file)) {
      if (!exported.name.endsWith('Options')) continue
      const symbol = target(surface, exported)
      if (!(symbol.flags & (ts.SymbolFlags.Interface | ts.SymbolFlags.TypeAlias))) continue
      walk(checker.getDeclaredTypeOfSymbol(symbol), exported.name, 0)
    }
  }
  return { violations, takesDurations }
}

/**
 * The package exports `Duration` from its main entry, and it is the shared one (declared in
 * tools/shared/src/duration.ts), when any of its options is a duration.
 */
export function checkDurationExport(
  surface: Surface,
  pkg: PackageInfo,
  takesDurations: boolean,
  root = REPO_ROOT,
): Violation[] {
  if (!takesDurations) return []
  const main = pkg.entries.get('.')
  if (!main) return []
  const exported = exportsOf(surface, main).find((s) => s.name === 'Duration')
  if (!exported) {
    return [
      {
        pkg: pkg.name,
        symbol: 'Duration',
        rule: 'duration-export',
        message: `its options take durations but src/index.ts exports no \`Duration\`: add \`export type { Duration } from '@ballast/shared'\``,
      },
    ]
  }
  const decl = target(surface, exported).declarations?.[0]
  const file = decl ? resolve(decl.getSourceFile().fileName) : undefined
  if (file !== sharedDurationFile(root)) {
    return [
      {
        pkg: pkg.name,
        symbol: 'Duration',
        rule: 'duration-export',
        message: file
          ? `exports its own Duration (declared in ${file.slice(root.length + 1)}): re-export the one of @ballast/shared`
          : 'exports a Duration that does not resolve to a declaration: re-export the one of @ballast/shared',
      },
    ]
  }
  return []
}

import { join, resolve, sep } from 'node:path'
import ts from 'typescript'
import type { PackageInfo, Surface, Violation } from './surface.js'

/**
 * What @ballast/shared provides, by name: a package function of one of these names is a copy
 * (the checks of `checks()` included: taking them from `checks(InvalidArgumentError)` binds the
 * name to the shared function and is not a copy).
 */
export const SHARED_HELPERS = new Set([
  'show',
  'merge',
  'parseDuration',
  'toMs',
  'invalid',
  'positiveNumber',
  'positiveInteger',
  'nonNegativeInteger',
  'ratio',
  'oneOf',
])

/** Whether a variable's initializer is a function written in place (a copy), not a binding. */
function isFunctionLiteral(node: ts.Expression | undefined): boolean {
  return node !== undefined && (ts.isArrowFunction(node) || ts.isFunctionExpression(node))
}

/**
 * The Shared code rule, on every source file of the package the entry points reach: no own
 * function named like a helper of @ballast/shared (`show`, `merge`, `parseDuration`, `toMs`,
 * the checks), no own emitter (a class named `*Emitter`, or one that extends `EventEmitter`).
 */
export function checkSharedCode(surface: Surface, pkg: PackageInfo): Violation[] {
  const src = join(pkg.dir, 'src')
  const violations: Violation[] = []
  const files = surface.program
    .getSourceFiles()
    .filter((f) => resolve(f.fileName).startsWith(`${src}${sep}`))
    .sort((a, b) => a.fileName.localeCompare(b.fileName))
  for (const file of files) {
    const where = resolve(file.fileName)
      .slice(pkg.dir.length + 1)
      .replaceAll('\\', '/')
    const report = (name: string, message: string) =>
      violations.push({ pkg: pkg.name, symbol: `${where} ${name}`, rule: 'shared-code', message })
    for (const statement of file.statements) {
      if (
        ts.isFunctionDeclaration(statement) &&
        statement.name &&
        SHARED_HELPERS.has(statement.name.text)
      ) {
        report(
          statement.name.text,
          'is a copy of a helper of @ballast/shared: import the shared one',
        )
      }
      if (ts.isVariableStatement(statement)) {
        for (const d of statement.declarationList.declarations) {
          if (
            ts.isIdentifier(d.name) &&
            SHARED_HELPERS.has(d.name.text) &&
            isFunctionLiteral(d.initializer)
          ) {
            report(d.name.text, 'is a copy of a helper of @ballast/shared: import the shared one')
          }
        }
      }
      if (ts.isClassDeclaration(statement) && statement.name) {
        const name = statement.name.text
        const extendsEventEmitter = statement.heritageClauses?.some((h) =>
          h.types.some((t) => /\bEventEmitter$/.test(t.expression.getText(file))),
        )
        if (name.endsWith('Emitter') || extendsEventEmitter) {
          report(
            name,
            'is an emitter of its own: use (extend or delegate to) the Emitter of @ballast/shared',
          )
        }
      }
    }
  }
  return violations
}

import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import ts from 'typescript'
import { exportsOf, type PackageInfo, type Surface, target, type Violation } from './surface.js'

/** The framework of an adapter entry point, by its subpath. */
export const ADAPTER_SUBPATHS: Readonly<Record<string, string>> = {
  './express': 'express',
  './fastify': 'fastify',
  './http': 'http',
}

/**
 * Rule 5: every value exported by `<pkg>/express` starts with `express` (`expressSession`), by
 * `<pkg>/fastify` with `fastify`, by `<pkg>/http` with `http`; constants with
 * `DEFAULT_<FRAMEWORK>_`. Types are not checked (`ExpressSessionOptions`, `StoredResponse`).
 */
export function checkAdapters(surface: Surface, pkg: PackageInfo): Violation[] {
  const violations: Violation[] = []
  for (const [subpath, file] of pkg.entries) {
    const framework = ADAPTER_SUBPATHS[subpath]
    if (!framework) continue
    const constant = `DEFAULT_${framework.toUpperCase()}_`
    const camel = new RegExp(`^${framework}(?:[A-Z0-9]|$)`)
    for (const exported of exportsOf(surface, file)) {
      if (!(target(surface, exported).flags & ts.SymbolFlags.Value)) continue
      const name = exported.name
      if (camel.test(name) || name.startsWith(constant)) continue
      violations.push({
        pkg: pkg.name,
        symbol: `${pkg.npmName}/${framework} ${name}`,
        rule: 'adapter-name',
        message: `is exported by the ${framework} subpath: name it \`${framework}${name.charAt(0).toUpperCase()}${name.slice(1)}\` (values start with \`${framework}\`)`,
      })
    }
  }
  return violations
}

/** The newest modification time of a file under `dir`, recursively. */
function newest(dir: string): number {
  let latest = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    latest = Math.max(latest, entry.isDirectory() ? newest(path) : statSync(path).mtimeMs)
  }
  return latest
}

/** The declaration a line of a .d.ts starts, shortened for a message. */
function declarationAfter(lines: readonly string[], from: number): string {
  for (let i = from; i < lines.length; i++) {
    const line = (lines[i] as string).trim()
    if (line === '' || line.startsWith('*') || line.startsWith('/*') || line.startsWith('//'))
      continue
    return line.length > 90 ? `${line.slice(0, 87)}...` : line
  }
  return '(end of file)'
}

/**
 * Rule 6: no `@internal` in the built declarations (`dist/*.d.ts`; tsup writes the same into
 * each `.d.cts`). The
 * declarations must exist and be newer than the sources: scripts/test.sh builds before it tests.
 */
export function checkBuiltDeclarations(pkg: PackageInfo): Violation[] {
  const dist = join(pkg.dir, 'dist')
  const report = (symbol: string, message: string): Violation => ({
    pkg: pkg.name,
    symbol,
    rule: 'no-internal-in-dts',
    message,
  })
  const files = existsSync(dist) ? readdirSync(dist).filter((f) => f.endsWith('.d.ts')) : []
  if (files.length === 0) {
    return [
      report('dist', 'has no built declarations: run `pnpm build` first (scripts/test.sh does)'),
    ]
  }
  const built = Math.min(...files.map((f) => statSync(join(dist, f)).mtimeMs))
  if (built < newest(join(pkg.dir, 'src'))) {
    return [report('dist', 'is older than src: run `pnpm build` first (scripts/test.sh does)')]
  }
  const violations: Violation[] = []
  for (const file of files.sort()) {
    const lines = readFileSync(join(dist, file), 'utf8').split('\n')
    lines.forEach((line, i) => {
      if (!/@internal\b/.test(line)) return
      violations.push(
        report(
          `dist/${file}:${i + 1} ${declarationAfter(lines, i + 1)}`,
          'is marked @internal but ships in the declarations: make it private (#field, src/internal/) or strip it',
        ),
      )
    })
  }
  return violations
}

import { mkdirSync, readdirSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { afterAll, beforeAll, expect, test } from 'vitest'
import {
  activeResources,
  type Example,
  findBlocks,
  locateError,
  readmePaths,
  settle,
  typecheck,
  useServerAddresses,
  writeExamples,
} from '../src/index.js'

/**
 * Every TypeScript block of README.md, packages/<name>/README.md and examples/shop/README.md
 * is written to generated/, typechecked with the repo's strict settings, and run (imported)
 * against the real servers: it must finish within the timeout and leave nothing open.
 * A block marked ```ts compile-only is typechecked and not run.
 */

const root = fileURLToPath(new URL('../../../', import.meta.url))
const here = fileURLToPath(new URL('../', import.meta.url))
// A directory per run, removed at the end: two runs at once must not overwrite each other's
// files. Directories of runs that were killed go after an hour.
const runs = join(here, 'generated')
mkdirSync(runs, { recursive: true })
for (const run of readdirSync(runs)) {
  const path = join(runs, run)
  if (statSync(path).mtimeMs < Date.now() - 3_600_000)
    rmSync(path, { recursive: true, force: true })
}
const generated = join(runs, `run-${process.pid}-${Date.now().toString(36)}`)

const examples = writeExamples(findBlocks(root), generated, (code) =>
  useServerAddresses(code, process.env),
)
const RUN_TIMEOUT_MS = 30_000
const SETTLE_MS = 5_000

let errors = new Map<Example, string[]>()
beforeAll(() => {
  errors = typecheck(examples, join(here, 'tsconfig.json'))
}, 180_000)

afterAll(() => {
  const compileOnly = examples.filter((example) => example.compileOnly).length
  console.log(
    `README examples: ${examples.length - compileOnly} run, ${compileOnly} compile-only, ` +
      `from ${readmePaths(root).length} READMEs`,
  )
  rmSync(generated, { recursive: true, force: true })
})

test('the READMEs have examples to run', () => {
  expect(examples.filter((example) => !example.compileOnly).length).toBeGreaterThan(0)
})

for (const example of examples) {
  const title = example.compileOnly ? `${example.name} (compile-only)` : example.name
  test(
    title,
    async () => {
      const problems = errors.get(example) ?? []
      if (problems.length > 0)
        throw new Error(`${example.name} does not typecheck:\n${problems.join('\n')}`)
      if (example.compileOnly) return
      const before = activeResources()
      try {
        await import(pathToFileURL(example.file).href)
      } catch (error) {
        throw locateError(error, example)
      }
      const open = await settle(before, SETTLE_MS)
      if (open.length > 0) {
        throw new Error(
          `${example.name} finished but left open: ${open.join(', ')} ` +
            '(an example closes every client, pool, broker and server it opens)',
        )
      }
    },
    RUN_TIMEOUT_MS + SETTLE_MS,
  )
}

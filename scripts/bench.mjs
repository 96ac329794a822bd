// `pnpm bench [package...]`: runs bench/<package>/*.bench.ts one file at a time, each in its
// own Node process (tsx, the @ballast/source condition, --expose-gc for memory figures).
// BENCH_SMOKE=1 runs each once with a tiny iteration count (CI), with a time limit per file.
import { spawnSync } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const benchDir = join(root, 'bench')
const wanted = process.argv.slice(2)
const smoke = process.env.BENCH_SMOKE === '1'
const packages = readdirSync(benchDir).filter(
  (d) => statSync(join(benchDir, d)).isDirectory() && !['results', 'node_modules'].includes(d),
)
for (const w of wanted) {
  if (!packages.includes(w)) {
    console.error(`bench: no benchmarks for "${w}" (have: ${packages.join(', ') || 'none'})`)
    process.exit(2)
  }
}
const files = (wanted.length ? wanted : packages)
  .flatMap((p) =>
    readdirSync(join(benchDir, p))
      .filter((f) => f.endsWith('.bench.ts'))
      .sort()
      .map((f) => join(benchDir, p, f)),
  )
  .filter((f) => existsSync(f))
if (files.length === 0) {
  console.log('bench: no benchmark files found')
  process.exit(0)
}
let failed = 0
for (const file of files) {
  const name = relative(root, file)
  console.log(`\n## ${name}${smoke ? ' (smoke)' : ''}`)
  const started = Date.now()
  const result = spawnSync(
    process.execPath,
    ['--expose-gc', '--conditions=@ballast/source', '--import', 'tsx', file],
    { cwd: root, stdio: 'inherit', timeout: (smoke ? 180 : 1800) * 1000, env: process.env },
  )
  const seconds = ((Date.now() - started) / 1000).toFixed(1)
  if (result.status !== 0) {
    failed++
    console.error(
      `bench: ${name} failed (${result.error?.message ?? `exit ${result.status ?? result.signal}`}) after ${seconds} s`,
    )
  } else {
    console.log(`bench: ${name} done in ${seconds} s`)
  }
}
if (failed) {
  console.error(`bench: ${failed} of ${files.length} benchmark files failed`)
  process.exit(1)
}

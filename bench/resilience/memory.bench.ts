/**
 * Memory and timers per breaker, for one breaker per host or shard: 10,000 breakers.
 * Run: pnpm bench resilience  (needs --expose-gc, which `pnpm bench` passes; falls back to v8 flags)
 */
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { circuitBreaker } from '@ballast/resilience'
import { ConsecutiveBreaker, circuitBreaker as cockatielBreaker, handleAll } from 'cockatiel'
import Opossum from 'opossum'
import { fmt, fmtInt, isSmoke, report } from '../harness.js'

setFlagsFromString('--expose-gc')
const gc = (globalThis.gc ?? runInNewContext('gc')) as () => void
const N = isSmoke() ? 100 : 10_000
const ok = () => Promise.resolve(1)

interface Subject {
  name: string
  make: (i: number) => unknown
  use: (b: unknown) => Promise<unknown>
  close: (b: unknown) => unknown
}

const subjects: Subject[] = [
  {
    name: '@ballast/resilience circuitBreaker',
    make: (i) => circuitBreaker(ok, { name: `host-${i}` }),
    use: (b) => (b as ReturnType<typeof circuitBreaker<[], number>>).fire(),
    close: (b) => (b as { close(): Promise<void> }).close(),
  },
  {
    name: 'opossum 10, defaults',
    make: (i) => new Opossum(ok, { name: `host-${i}` }),
    use: (b) => (b as Opossum).fire(),
    close: (b) => (b as Opossum).shutdown(),
  },
  {
    name: 'opossum 10, tuned (no snapshots, no percentiles, no timeout)',
    make: (i) =>
      new Opossum(ok, {
        name: `host-${i}`,
        enableSnapshots: false,
        rollingPercentilesEnabled: false,
        timeout: false,
      }),
    use: (b) => (b as Opossum).fire(),
    close: (b) => (b as Opossum).shutdown(),
  },
  {
    name: 'cockatiel 4 circuitBreaker',
    make: () =>
      cockatielBreaker(handleAll, { halfOpenAfter: 10_000, breaker: new ConsecutiveBreaker(5) }),
    use: (b) => (b as ReturnType<typeof cockatielBreaker>).execute(ok),
    close: () => {},
  },
]

async function measureOne(s: Subject): Promise<[number, number]> {
  let timers = 0
  const realSetInterval = globalThis.setInterval
  const realSetTimeout = globalThis.setTimeout
  globalThis.setInterval = ((...args: Parameters<typeof setInterval>) => {
    timers++
    return realSetInterval(...args)
  }) as typeof setInterval
  globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => {
    timers++
    return realSetTimeout(...args)
  }) as typeof setTimeout
  for (let i = 0; i < 3; i++) gc()
  const before = process.memoryUsage().heapUsed
  const breakers = Array.from({ length: N }, (_, i) => s.make(i))
  // ten calls each, so per-call state (buckets, latency arrays) is part of the figure
  for (let round = 0; round < 10; round++) await Promise.all(breakers.map((b) => s.use(b)))
  globalThis.setInterval = realSetInterval
  globalThis.setTimeout = realSetTimeout
  for (let i = 0; i < 3; i++) gc()
  const after = process.memoryUsage().heapUsed
  for (const b of breakers) await s.close(b)
  return [(after - before) / N, timers / N]
}

const child = process.argv.indexOf('--subject')
if (child !== -1) {
  // one subject per process: nothing left over from another library skews the heap
  const subject = subjects[Number(process.argv[child + 1])] as Subject
  process.stdout.write(`${JSON.stringify(await measureOne(subject))}\n`)
} else {
  const { execFileSync } = await import('node:child_process')
  const rows: (string | number)[][] = []
  for (let i = 0; i < subjects.length; i++) {
    const out = execFileSync(
      process.execPath,
      [...process.execArgv, process.argv[1] as string, '--subject', String(i)],
      { encoding: 'utf8', env: process.env },
    )
    const [bytes, timers] = JSON.parse(out.trim().split('\n').at(-1) as string) as [number, number]
    rows.push([(subjects[i] as Subject).name, fmtInt(bytes), fmt(timers)])
  }
  report({
    package: 'resilience',
    name: 'memory',
    title: `Memory and timers per breaker (${fmtInt(N)} breakers, 10 calls each)`,
    columns: ['breaker', 'heap bytes per breaker', 'timers per breaker'],
    rows,
    notes: [
      'Each library measured in its own process; timers counted by wrapping setInterval/setTimeout while the breakers were created and called.',
    ],
  })
}

/**
 * A retry + breaker + timeout + bulkhead pipeline on the success path, against cockatiel's
 * `wrap` of the same four policies (and of five, with a fallback).
 * Run: pnpm bench resilience
 */
import { bulkhead, circuitBreaker, fallback, pipeline, retry, timeout } from '@ballast/resilience'
import {
  ConsecutiveBreaker,
  circuitBreaker as cBreaker,
  bulkhead as cBulkhead,
  fallback as cFallback,
  retry as cRetry,
  timeout as cTimeout,
  ExponentialBackoff,
  handleAll,
  TimeoutStrategy,
  wrap,
} from 'cockatiel'
import { compare, report } from '../harness.js'
import { cpuPerCall, cpuRows } from './cpu.js'

const ok = () => Promise.resolve(1)

const breaker = circuitBreaker({ name: 'psp' })
const ours4 = pipeline(
  retry({ maxAttempts: 3 }),
  breaker,
  timeout(1000),
  bulkhead({ limit: 1000, queue: 1000 }),
)
const ours5 = pipeline(
  fallback(() => 0),
  retry({ maxAttempts: 3 }),
  circuitBreaker({ name: 'psp5' }),
  timeout(1000),
  bulkhead({ limit: 1000, queue: 1000 }),
)
const readsSignal = ({ signal }: { signal: AbortSignal }) =>
  signal.aborted ? Promise.resolve(0) : ok()

const cockatiel4 = wrap(
  cRetry(handleAll, { maxAttempts: 2, backoff: new ExponentialBackoff() }),
  cBreaker(handleAll, { halfOpenAfter: 10_000, breaker: new ConsecutiveBreaker(5) }),
  cTimeout(1000, TimeoutStrategy.Cooperative),
  cBulkhead(1000, 1000),
)
const cockatiel5 = wrap(
  cFallback(handleAll, 0),
  cRetry(handleAll, { maxAttempts: 2, backoff: new ExponentialBackoff() }),
  cBreaker(handleAll, { halfOpenAfter: 10_000, breaker: new ConsecutiveBreaker(5) }),
  cTimeout(1000, TimeoutStrategy.Cooperative),
  cBulkhead(1000, 1000),
)

await compare({
  package: 'resilience',
  name: 'pipeline',
  title: 'retry + breaker + timeout + bulkhead, success path (ns per call)',
  cases: [
    { name: '@ballast/resilience pipeline (4 policies)', fn: () => ours4.execute(ok), ours: true },
    {
      name: '@ballast/resilience pipeline (4), work reads the signal',
      fn: () => ours4.execute(readsSignal),
    },
    { name: '@ballast/resilience pipeline (5, with fallback)', fn: () => ours5.execute(ok) },
    { name: 'cockatiel 4 wrap (4 policies)', fn: () => cockatiel4.execute(ok) },
    { name: 'cockatiel 4 wrap (5, with fallback)', fn: () => cockatiel5.execute(ok) },
    { name: 'bare call (baseline)', fn: () => ok() },
  ],
  notes: [
    'Our timeout keeps one timer per policy and creates the AbortController only when the work reads `signal`; cockatiel creates one per call.',
  ],
})
const cpu = await cpuPerCall([
  { name: '@ballast/resilience pipeline (4 policies)', fn: () => ours4.execute(ok) },
  { name: '@ballast/resilience pipeline (5, with fallback)', fn: () => ours5.execute(ok) },
  { name: 'cockatiel 4 wrap (4 policies)', fn: () => cockatiel4.execute(ok) },
  { name: 'cockatiel 4 wrap (5, with fallback)', fn: () => cockatiel5.execute(ok) },
])
report({
  package: 'resilience',
  name: 'pipeline-cpu',
  title:
    'retry + breaker + timeout + bulkhead, success path: CPU ns per awaited call (median of 5 interleaved rounds)',
  columns: ['case', 'CPU ns/call', 'this / ours'],
  rows: cpuRows(cpu, '@ballast/resilience pipeline (4 policies)'),
})
await breaker.close()

// Redis Cluster failover under load (issue 19): a master of a PRIVATE cluster (this file's own
// redis-server processes; the shared 7000-7005 cluster is never killed) is SIGKILLed while
// idempotency run() and rate limiter consume() run against it, first with ioredis's default
// Cluster options, then with the settings the README documents. Then the loss test: a
// replica made to lag (SIGSTOP, its socket buffers full) while claims are acknowledged, its
// master killed. Long: 25-45 s (a promotion takes 4 s, or 13 s when the first election fails).
import {
  type PrivateRedisCluster,
  type RecordedCall,
  RIDE_OUT_CLUSTER_OPTIONS,
  RIDE_OUT_TIMEOUT,
  redisKeySlot,
  servedAgainAfter,
  startLoad,
  startPrivateRedisCluster,
  summarizeCalls,
} from '@ballast/testkit'
import { Cluster, type ClusterOptions } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  createIdempotency,
  createRateLimiter,
  IdempotencyFencedError,
  IdempotencyInFlightError,
  isResilienceError,
  RateLimitedError,
} from '../src/index.js'

const NODE_TIMEOUT = 2000
const LOOPS = 8
/** ioredis's defaults: 16 redirections, 100 ms apart, give up after ~1.2 s. */
const IOREDIS_DEFAULTS: ClusterOptions = {}
const RIDE_OUT: ClusterOptions = RIDE_OUT_CLUSTER_OPTIONS
const LIMIT = 40
const INTERVAL = 1000

function summarizeErrors(errors: unknown[]): Record<string, number> {
  const byCode: Record<string, number> = {}
  for (const error of errors) {
    const code = String((error as { code?: unknown }).code)
    byCode[code] = (byCode[code] ?? 0) + 1
  }
  return byCode
}
const isFenced = (error: unknown) => error instanceof IdempotencyFencedError
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

let cluster: PrivateRedisCluster
beforeAll(async () => {
  cluster = await startPrivateRedisCluster({ nodeTimeout: NODE_TIMEOUT })
}, 40_000)
afterAll(async () => {
  await cluster?.close()
})

/** Keys served by `port`'s slots (read before it is killed). */
async function keysOf(port: number): Promise<(key: string) => boolean> {
  const ranges = await cluster.slotsOf(port)
  return (key) => {
    const slot = redisKeySlot(key)
    return ranges.some(([from, to]) => slot >= from && slot <= to)
  }
}

interface Figures {
  run: ReturnType<typeof summarizeCalls>
  consume: ReturnType<typeof summarizeCalls>
  servedAgainMs: { run: number | undefined; consume: number | undefined }
  healthyMs: number
  doneTwice: number
  overBudget: number
  lostCompletions: number
  /**
   * run() calls refused as fenced: a complete() whose reply was lost in the kill is resent by
   * ioredis to the promoted replica, which has the record it stored. The script recognises its
   * own write (same token and claim id): must be 0.
   */
  fenced: number
  /**
   * run() calls refused as in flight (fresh keys: nobody else has them): a claim resent the
   * same way finds its own claim. The script answers it as acquired: must be 0.
   */
  ownInFlight: number
  /** run() calls whose work ran but whose record could not be stored (`result-not-stored`). */
  notStored: number
  calls: readonly RecordedCall[]
}

/** One failover under load: kill the master of `victimKey`, wait until the cluster is ok, then 1.5 s more. */
async function failoverUnderLoad(
  label: string,
  clientOptions: ClusterOptions,
  commandTimeout: number,
): Promise<Figures> {
  const client = new Cluster(cluster.seeds, clientOptions)
  client.on('error', () => undefined)
  try {
    const prefix = `idem:${label}:`
    const idempotency = createIdempotency({ redis: client, prefix, commandTimeout })
    const limiter = createRateLimiter({
      redis: client,
      prefix: `rl:${label}:`,
      limit: LIMIT,
      interval: INTERVAL,
      commandTimeout,
    })
    const runs = new Map<string, number>()
    // resent scripts that did not recognise their own write (see Figures): none
    const fenced: string[] = []
    const ownInFlight: string[] = []
    const notStored = new Set<string>()
    idempotency.on('result-not-stored', ({ key }) => notStored.add(key))
    const completed: string[] = []
    const allowed = new Map<string, number>()
    const load = startLoad(LOOPS, async (loop, i, rec) => {
      const key = `${loop}-${i}`
      const result = await rec.call('run', `${prefix}{${key}}`, () =>
        idempotency.run(key, { loop, i }, () => {
          runs.set(key, (runs.get(key) ?? 0) + 1)
          return i
        }),
      )
      if (result !== undefined) completed.push(key)
      else if (isFenced(rec.calls.at(-1)?.error)) fenced.push(key)
      else if (rec.calls.at(-1)?.error instanceof IdempotencyInFlightError) ownInFlight.push(key)
      const rlKey = `user-${(loop * 7 + i) % 24}`
      const allowedNow = await rec.call('consume', `rl:${label}:${rlKey}`, async () => {
        try {
          await limiter.consume(rlKey)
          return true
        } catch (error) {
          // over budget is the limiter working, not a failure
          if (error instanceof RateLimitedError) return false
          throw error
        }
      })
      if (allowedNow === true) allowed.set(rlKey, (allowed.get(rlKey) ?? 0) + 1)
    })
    const startedAt = performance.now()
    await sleep(1500)
    const victim = await cluster.masterOf(`${prefix}{victim}`)
    const onVictim = await keysOf(victim.port)
    await cluster.kill(victim.port)
    const killedAt = performance.now()
    const healthyMs = await cluster.waitHealthy(20_000)
    await sleep(1500)
    await load.stop()
    const elapsed = performance.now() - startedAt

    // every completion acknowledged on the dead master's slots is replayed, not run again
    // (a run() whose complete() failed has no record: it stays in flight until its lease
    // runs out, and is not counted here; there were none in our runs)
    let lostCompletions = 0
    for (const key of completed.filter((k) => onVictim(`${prefix}{${k}}`) && !notStored.has(k))) {
      const [loop, i] = key.split('-').map(Number)
      const again = await idempotency.run(key, { loop, i }, () => {
        runs.set(key, (runs.get(key) ?? 0) + 1)
        return -1
      })
      if (!again.replayed) lostCompletions++
    }
    const budget = LIMIT + Math.ceil((elapsed / INTERVAL) * LIMIT) + 1
    const figures: Figures = {
      run: summarizeCalls(load.calls, 'run'),
      consume: summarizeCalls(load.calls, 'consume'),
      servedAgainMs: {
        run: servedAgainAfter(
          load.calls.filter((c) => c.op === 'run'),
          killedAt,
          onVictim,
        ),
        consume: servedAgainAfter(
          load.calls.filter((c) => c.op === 'consume'),
          killedAt,
          onVictim,
        ),
      },
      healthyMs: Math.round(healthyMs),
      doneTwice: [...runs.values()].filter((n) => n > 1).length,
      overBudget: [...allowed.values()].filter((n) => n > budget).length,
      lostCompletions,
      fenced: fenced.length,
      ownInFlight: ownInFlight.length,
      notStored: notStored.size,
      calls: load.calls,
    }
    const { calls: _, ...shown } = figures
    console.info(`[failover ${label}] ${JSON.stringify(shown)}`)
    await idempotency.close()
    await limiter.close()
    // the killed node comes back as a replica, so the next scenario has one again
    await cluster.restart(victim.port)
    await cluster.waitHealthy(20_000)
    return figures
  } finally {
    client.disconnect()
  }
}

function expectTypedAndBounded(figures: Figures, commandTimeout: number) {
  for (const call of figures.calls) {
    if ('error' in call) {
      expect(isResilienceError(call.error), String(call.error)).toBe(true)
      expect(call.error).toMatchObject({ retryable: true })
      expect([
        'E_RESILIENCE_IDEMPOTENCY_UNAVAILABLE',
        'E_RESILIENCE_RATE_LIMITER_UNAVAILABLE',
      ]).toContain((call.error as { code: string }).code)
    }
    // run() is two round trips (claim, complete), consume() one; generous slack for 2 busy cores
    expect(call.ms).toBeLessThan(2 * commandTimeout + 2000)
  }
  expect(figures.doneTwice).toBe(0)
  expect(figures.overBudget).toBe(0)
  expect(figures.lostCompletions).toBe(0)
  // a resent claim or complete() answers as its first send did (issue 19 part 3)
  expect(figures.fenced).toBe(0)
  expect(figures.ownInFlight).toBe(0)
  expect(figures.servedAgainMs.run).toBeDefined()
  expect(figures.servedAgainMs.consume).toBeDefined()
}

describe('idempotency and rate limiter while a Cluster master fails over (private cluster, SIGKILL)', () => {
  let defaults: Figures

  it('with ioredis defaults: errors are typed, retryable and bounded; nothing done twice or over budget (long: 8-18 s)', async () => {
    defaults = await failoverUnderLoad('defaults', IOREDIS_DEFAULTS, 2000)
    expectTypedAndBounded(defaults, 2000)
  }, 40_000)

  it('with the documented settings, callers ride out the promotion: fewer errors (long: 8-18 s)', async () => {
    const rideOut = await failoverUnderLoad('ride-out', RIDE_OUT, RIDE_OUT_TIMEOUT)
    expectTypedAndBounded(rideOut, RIDE_OUT_TIMEOUT)
    // the settings wait ~6.4 s; a promotion that took longer may still fail some calls
    const unavailable = (f: Figures) => f.run.errors + f.consume.errors
    if (rideOut.healthyMs < 5500) expect(unavailable(rideOut)).toBe(0)
    expect(unavailable(rideOut)).toBeLessThanOrEqual(unavailable(defaults))
  }, 40_000)
})

describe('what asynchronous replication loses: a lagging replica promoted (SIGSTOP, then its master SIGKILLed)', () => {
  it('claims acknowledged while the replica lagged are lost (a retry runs the work again); with replication (WAIT) they fail closed instead (long: ~13 s)', async () => {
    const client = new Cluster(cluster.seeds, RIDE_OUT)
    client.on('error', () => undefined)
    try {
      const prefix = 'idem:loss:'
      const plain = createIdempotency({ redis: client, prefix, commandTimeout: RIDE_OUT_TIMEOUT })
      const waiting = createIdempotency({
        redis: client,
        prefix,
        commandTimeout: RIDE_OUT_TIMEOUT,
        replication: { replicas: 1, timeout: 100 },
      })
      const master = await cluster.masterOf(`${prefix}{loss}`)
      const replica = await cluster.replicaOf(master.port)
      const onMaster = await keysOf(master.port)
      const keys: string[] = []
      for (let n = 0; keys.length < 350; n++) if (onMaster(`${prefix}{k${n}}`)) keys.push(`k${n}`)
      const groups = {
        plainReplicated: keys.slice(0, 100),
        plainWhileLagging: keys.slice(100, 200),
        waitReplicated: keys.slice(200, 300),
        // 50: WAIT blocks the client's one connection to the master, so these WAITs (100 ms
        // each while the replica lags) run one after the other, ~5 s in all
        waitWhileLagging: keys.slice(300),
      }
      const runs = new Map<string, number>()
      const work = (key: string) => () => {
        runs.set(key, (runs.get(key) ?? 0) + 1)
        return key
      }
      const runAll = async (store: typeof plain, list: string[]) => {
        const outcomes = await Promise.allSettled(list.map((key) => store.run(key, key, work(key))))
        const refused = outcomes.flatMap((o) => (o.status === 'rejected' ? [o.reason] : []))
        return { acknowledged: list.length - refused.length, refused }
      }
      // before the lag: replicated; the replica has these
      await runAll(plain, groups.plainReplicated)
      const waitBefore = await runAll(waiting, groups.waitReplicated)
      expect(waitBefore.refused).toEqual([])
      // applied by the replica, not only sent (see the session package's loss test)
      await cluster.waitReplicated(master.port)

      // SIGSTOP alone loses nothing on loopback (the stopped replica's socket buffers hold the
      // stream and it reads them on SIGCONT): lagReplica also fills them with 64 MiB first
      await cluster.lagReplica(replica.port)
      const plainLagging = await runAll(plain, groups.plainWhileLagging)
      const waitStarted = performance.now()
      const waitLagging = await runAll(waiting, groups.waitWhileLagging)
      const waitLaggingMs = Math.round(performance.now() - waitStarted)
      await cluster.kill(master.port)
      cluster.resume(replica.port)
      const promotedBy = await cluster.promote(replica.port)
      await cluster.waitHealthy(20_000)

      // a client retrying each key after the failover
      for (const key of keys) await plain.run(key, key, work(key))
      const twice = (list: string[]) => list.filter((k) => (runs.get(k) ?? 0) > 1).length
      const figures = {
        plain: {
          replicated: { acknowledged: 100, doneTwice: twice(groups.plainReplicated) },
          whileLagging: {
            acknowledged: plainLagging.acknowledged,
            doneTwice: twice(groups.plainWhileLagging),
          },
        },
        wait: {
          replicated: { acknowledged: 100, doneTwice: twice(groups.waitReplicated) },
          whileLagging: {
            acknowledged: waitLagging.acknowledged,
            refused: waitLagging.refused.length,
            refusedByCode: summarizeErrors(waitLagging.refused),
            ranBeforeRefusal: groups.waitWhileLagging.filter((k) => runs.get(k) !== 1).length,
            doneTwice: twice(groups.waitWhileLagging),
            ms: waitLaggingMs,
          },
        },
        promotedBy,
      }
      console.info(`[loss idempotency] ${JSON.stringify(figures)}`)
      // what was replicated survives; what the lagging replica missed is done twice
      expect(figures.plain.replicated.doneTwice).toBe(0)
      expect(figures.plain.whileLagging).toEqual({ acknowledged: 100, doneTwice: 100 })
      // with WAIT nothing unreplicated was acknowledged: every claim failed closed, the work
      // ran once, after the failover
      expect(figures.wait.replicated.doneTwice).toBe(0)
      // with more of them, those queued past commandTimeout fail as unavailable (100 claims: 34)
      for (const error of waitLagging.refused) {
        expect(error).toMatchObject({ retryable: true })
        expect([
          'E_RESILIENCE_IDEMPOTENCY_NOT_REPLICATED',
          'E_RESILIENCE_IDEMPOTENCY_UNAVAILABLE',
        ]).toContain((error as { code: string }).code)
      }
      expect(figures.wait.whileLagging).toMatchObject({
        acknowledged: 0,
        refused: 50,
        ranBeforeRefusal: 0,
        doneTwice: 0,
      })
      await plain.close()
      await waiting.close()
      await cluster.restart(master.port)
      await cluster.waitHealthy(20_000)
    } finally {
      client.disconnect()
    }
  }, 60_000)
})

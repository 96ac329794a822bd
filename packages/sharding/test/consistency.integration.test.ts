import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import {
  CausalToken,
  createShardRouter,
  type ShardRouter,
  type ShardRouterEvents,
} from '../src/index.js'
import {
  eventually,
  setMasterDelay,
  sql,
  stopSqlThread,
  type Topology,
  topology,
} from './fixtures.js'

// Every test here that stops the shared replica's SQL thread restarts it in a finally, and keeps
// the window to a few seconds: other engineers use the same replica.

let topo: Topology
const routers: ShardRouter[] = []
let nextId = 1

beforeAll(async () => {
  topo = await topology('shard_consistency', 1, 0)
})

afterAll(async () => {
  await Promise.all(routers.map((r) => r.close()))
  await topo?.cleanup()
})

function pairRouter(options: Record<string, unknown>): ShardRouter {
  const router = createShardRouter({
    shards: [{ id: 'pair', primary: topo.pair[0]!.primary, replicas: [topo.pair[0]!.replica] }],
    connectionLimit: 20,
    ...options,
  })
  routers.push(router)
  return router
}

async function pool<T>(
  count: number,
  concurrency: number,
  fn: (i: number) => Promise<T>,
): Promise<T[]> {
  const out: T[] = new Array(count)
  let next = 0
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const i = next++
        out[i] = await fn(i)
      }
    }),
  )
  return out
}

describe('read-your-writes', () => {
  it('never returns a stale row in 1,000 reads right after writes while the replica SQL thread is stopped, and eventual reads keep working', async () => {
    // Health checks off: every read goes through the GTID wait on the stalled replica.
    const router = pairRouter({ healthCheckInterval: 0, gtidWaitTimeout: 50 })
    const restart = await stopSqlThread(topo.replicaServer)
    let stale = 0
    let eventualOk = 0
    try {
      await pool(1000, 20, (i) =>
        router.run({}, async () => {
          const id = nextId++
          const user = `ryw-${i % 50}`
          await router.query(
            user,
            'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, 1, ?)',
            [id, user, i],
          )
          const rows = await router.query<unknown[]>(user, 'SELECT id FROM orders WHERE id = ?', [
            id,
          ])
          if (rows.length !== 1) stale++
          if (i % 10 === 0) {
            await router.query(user, 'SELECT COUNT(*) AS n FROM orders WHERE user_id = ?', [user], {
              consistency: 'eventual',
            })
            eventualOk++
          }
        }),
      )
    } finally {
      await restart()
    }
    expect(stale).toBe(0)
    expect(eventualOk).toBe(100)
    const stats = router.stats()
    // The replica was really behind: the waits timed out and those reads went to the primary.
    expect(stats.gtidWaitsTimedOut).toBeGreaterThan(0)
    expect(stats.fellBackToPrimary).toBeGreaterThanOrEqual(stats.gtidWaitsTimedOut)
  })

  it('never returns a stale row with MASTER_DELAY set on the replica; a long enough wait is served by the replica itself', async () => {
    const fast = pairRouter({ healthCheckInterval: 0, gtidWaitTimeout: 50 })
    const patient = pairRouter({ healthCheckInterval: 0, gtidWaitTimeout: 5000 })
    const writeThenRead = (router: ShardRouter, i: number, label: string) =>
      router.run({}, async () => {
        const id = nextId++
        const user = `${label}-${i % 20}`
        await router.query(
          user,
          'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, 1, ?)',
          [id, user, i],
        )
        const rows = await router.query<unknown[]>(user, 'SELECT id FROM orders WHERE id = ?', [id])
        return rows.length === 1
      })
    const restore = await setMasterDelay(topo.replicaServer, 1)
    let fresh: boolean[]
    let patientFresh: boolean[]
    try {
      ;[fresh, patientFresh] = await Promise.all([
        pool(300, 20, (i) => writeThenRead(fast, i, 'delay')),
        pool(4, 4, (i) => writeThenRead(patient, i, 'delay-wait')),
      ])
    } finally {
      await restore()
    }
    expect(fresh.filter((ok) => !ok)).toEqual([])
    expect(patientFresh).toEqual([true, true, true, true])
    // The delay was real: short waits timed out and went to the primary...
    expect(fast.stats().gtidWaitsTimedOut).toBeGreaterThan(0)
    // ...and waits longer than the delay were answered by the replica, in the same round trip.
    expect(patient.stats().gtidWaitsTimedOut).toBe(0)
    expect(patient.stats().shards.pair!.replicaQueries).toBe(4)
  })

  it('reads its own writes from the replica when it keeps up, waiting in the same round trip', async () => {
    const router = pairRouter({ healthCheckInterval: 0, gtidWaitTimeout: 2000 })
    let stale = 0
    await pool(200, 10, (i) =>
      router.run({}, async () => {
        const id = nextId++
        await router.query(
          `u${i}`,
          'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, 1, 0)',
          [id, `u${i}`],
        )
        const rows = await router.query<unknown[]>(`u${i}`, 'SELECT id FROM orders WHERE id = ?', [
          id,
        ])
        if (rows.length !== 1) stale++
      }),
    )
    expect(stale).toBe(0)
    const stats = router.stats()
    expect(stats.shards.pair!.replicaQueries).toBe(200)
    expect(stats.gtidWaits + stats.gtidWaitsSkipped).toBe(200)
    expect(stats.gtidWaitsTimedOut).toBe(0)
  })

  it('reads the primary when the replica cannot reach the token in time', async () => {
    const router = pairRouter({ healthCheckInterval: 0, gtidWaitTimeout: 100 })
    const restart = await stopSqlThread(topo.replicaServer)
    try {
      const id = nextId++
      const rows = await router.run({}, async () => {
        await router.query(
          'k',
          'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, 1, 0)',
          [id, 'k'],
        )
        return router.query<unknown[]>('k', 'SELECT id FROM orders WHERE id = ?', [id])
      })
      expect(rows).toHaveLength(1)
      expect(router.stats()).toMatchObject({
        gtidWaits: 1,
        gtidWaitsTimedOut: 1,
        fellBackToPrimary: 1,
      })
    } finally {
      await restart()
    }
  })
})

describe('causal tokens from clients', () => {
  const secrets = ['current-secret-0123456789abcdef0123', 'previous-secret-0123456789abcdef012']

  it('ignores a forged or tampered token string: counted, emitted, and no read waits for it', async () => {
    const router = pairRouter({ healthCheckInterval: 0, gtidWaitTimeout: 300, secrets })
    const refused: string[] = []
    router.on('causal-token-refused', (e) => refused.push(e.reason))
    const signed = router.signCausalToken(CausalToken.of('pair', '0-1-1'))
    const tampered = signed.replace('0-1-1~', '0-1-999999999999~')
    for (const cookie of ['pair:0-1-999999999999', tampered]) {
      const rows = await router.run({ causalToken: cookie }, async () => {
        expect(router.causalToken().isEmpty).toBe(true)
        return router.query('k', 'SELECT 1 AS one')
      })
      expect(rows).toEqual([{ one: 1 }])
    }
    // A token signed with the previous secret still counts (rotation).
    const rotated = CausalToken.of('pair', '0-1-1').sign(secrets[1]!)
    router.run({ causalToken: rotated }, () => {
      expect(router.causalToken().toString()).toBe('pair:0-1-1')
    })
    expect(refused).toEqual(['malformed', 'bad-signature'])
    expect(router.stats()).toMatchObject({
      causalTokensRefused: 2,
      gtidWaits: 0,
      gtidWaitsTimedOut: 0,
    })
    expect(router.stats().shards.pair!.replicaQueries).toBe(2)
  })

  it('makes no read wait for positions ahead of the primary, even validly signed, so they cannot hold replica connections', async () => {
    const router = pairRouter({
      healthCheckInterval: 0,
      gtidWaitTimeout: 500,
      connectionLimit: 2,
      secrets,
    })
    const events: string[] = []
    router.on('causal-token-refused', (e) => events.push(e.reason))
    router.on('fell-back-to-primary', (e) => events.push(e.reason))
    await router.checkReplicas() // samples the primary's gtid_binlog_pos
    const [{ p }] = await sql(topo.primaryServer, 'SELECT @@GLOBAL.gtid_binlog_pos AS p')
    const [domain, server] = String(p).split(',')[0]!.split('-')
    // Far ahead of the primary, and in a domain it never wrote: as if the secret had leaked.
    const forged = router.signCausalToken(
      CausalToken.of('pair', `${domain}-${server}-999999999999,77-1-5`),
    )
    // Twenty requests at once carry it, with two connections per pool; an honest read joins them.
    const [forgedRows, honest] = await Promise.all([
      Promise.all(
        Array.from({ length: 20 }, () =>
          router.run({ causalToken: forged }, () => router.query('k', 'SELECT 1 AS one')),
        ),
      ),
      router.query('k', 'SELECT 2 AS two', [], { consistency: 'eventual' }),
    ])
    expect(forgedRows).toEqual(Array.from({ length: 20 }, () => [{ one: 1 }]))
    expect(honest).toEqual([{ two: 2 }])
    // The primary's last sample predates these requests, so the positions might be fresh
    // writes of another process: each read goes to the primary, none waits on the replica.
    let stats = router.stats()
    expect(stats).toMatchObject({ gtidWaits: 0, gtidWaitsTimedOut: 0, fellBackToPrimary: 20 })
    expect(stats.shards.pair!.replicaQueries).toBe(1)
    expect(events.filter((e) => e === 'token-ahead-of-primary')).toHaveLength(20)
    // Once the primary is sampled after the request began and still lacks them, they are
    // dropped from the token, and reads go back to the replica.
    await router.run({ causalToken: forged }, async () => {
      await router.checkReplicas()
      expect(await router.query('k', 'SELECT 1 AS one')).toEqual([{ one: 1 }])
      expect(router.causalToken().isEmpty).toBe(true)
    })
    stats = router.stats()
    expect(stats).toMatchObject({ gtidWaits: 0, gtidWaitsTimedOut: 0, causalPositionsDropped: 2 })
    expect(stats.shards.pair!.replicaQueries).toBe(2)
    expect(events).toContain('ahead-of-primary')
  })

  it('keeps a real position of another process when the wall clock steps back after the primary was sampled', async () => {
    const router = pairRouter({ healthCheckInterval: 0, gtidWaitTimeout: 1000, secrets })
    const other = pairRouter({ healthCheckInterval: 0, secrets }) // another process
    await router.checkReplicas() // samples the primary before the other process writes
    const id = nextId++
    const cookie = await other.run({}, async () => {
      await other.query(
        'k',
        'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, 1, 0)',
        [id, 'k'],
      )
      return other.signCausalToken()
    })
    const written = CausalToken.verify(cookie, secrets)!
    // NTP steps the wall clock back 5 s just as the request comes in: by the wall clock, the
    // request now seems to have begun before the sample was taken.
    const clock = vi.spyOn(Date, 'now').mockReturnValueOnce(Date.now() - 5000)
    let rows: unknown[]
    let token: CausalToken
    try {
      ;[rows, token] = await router.run({ causalToken: cookie }, async () => [
        await router.query<unknown[]>('k', 'SELECT id FROM orders WHERE id = ?', [id]),
        router.causalToken(),
      ])
    } finally {
      clock.mockRestore()
    }
    // The write is newer than the sample: it is kept (the next cookie still demands it), and
    // the read does not go to a replica that may not have it.
    expect(rows).toHaveLength(1)
    expect(token.covers(written)).toBe(true)
    expect(router.stats().causalPositionsDropped).toBe(0)
  })

  it('asks for secrets before it takes a token string', () => {
    const router = pairRouter({ healthCheckInterval: 0 })
    expect(() => router.run({ causalToken: 'pair:0-1-1' }, () => 1)).toThrow(
      /invalid option "secrets"/,
    )
    expect(() => router.signCausalToken()).toThrow(/invalid option "secrets"/)
    expect(() => pairRouter({ secrets: 'too short' })).toThrow(/invalid option "secrets"/)
  })
})

describe('replica health', () => {
  it('takes a replica whose SQL thread stopped out of rotation, reads the primary meanwhile, and restores it', async () => {
    const router = pairRouter({ healthCheckInterval: 100, maxReplicaLag: 2000 })
    const events: Array<{ type: keyof ShardRouterEvents; reason?: string }> = []
    router.on('replica-ejected', (e) => events.push({ type: 'replica-ejected', reason: e.reason }))
    router.on('replica-restored', () => events.push({ type: 'replica-restored' }))
    await router.checkReplicas()
    expect(router.stats().replicas[0]!.available).toBe(true)
    const restart = await stopSqlThread(topo.replicaServer)
    try {
      await router.query(
        'x',
        'INSERT INTO orders (id, user_id, total, created_at) VALUES (?, ?, 1, 0)',
        [nextId++, 'x'],
      )
      await eventually(() => !router.stats().replicas[0]!.available, 5000)
      expect(router.stats().replicas[0]).toMatchObject({
        healthy: false,
        lagMs: Number.POSITIVE_INFINITY,
        reason: 'SQL thread stopped',
      })
      const before = router.stats()
      for (const consistency of ['eventual', 'bounded', 'read-your-writes'] as const) {
        await router.query('x', 'SELECT * FROM orders WHERE user_id = ?', ['x'], { consistency })
      }
      const after = router.stats()
      expect(after.shards.pair!.replicaQueries).toBe(before.shards.pair!.replicaQueries)
      expect(after.fellBackToPrimary - before.fellBackToPrimary).toBe(3)
    } finally {
      await restart()
    }
    await eventually(() => router.stats().replicas[0]!.available, 10_000)
    const before = router.stats().shards.pair!.replicaQueries
    await router.query('x', 'SELECT * FROM orders WHERE user_id = ?', ['x'], {
      consistency: 'eventual',
    })
    expect(router.stats().shards.pair!.replicaQueries).toBe(before + 1)
    expect(events.map((e) => e.type)).toEqual(['replica-ejected', 'replica-restored'])
    expect(events[0]!.reason).toBe('SQL thread stopped')
  })

  it('serves bounded reads only from replicas whose measured lag is under the bound', async () => {
    const router = pairRouter({ healthCheckInterval: 0 })
    // Before any measurement the lag is unknown: a bounded read goes to the primary.
    await router.query('b', 'SELECT 1', [], { consistency: 'bounded', maxLag: 1000 })
    expect(router.stats().shards.pair!.replicaQueries).toBe(0)
    await router.checkReplicas()
    await router.checkReplicas()
    expect(router.stats().replicas[0]!.lagMs).toBeLessThanOrEqual(1000)
    await router.query('b', 'SELECT 1', [], { consistency: 'bounded', maxLag: 1000 })
    expect(router.stats().shards.pair!.replicaQueries).toBe(1)
  })
})

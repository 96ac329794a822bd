import { describe, expect, it } from 'vitest'
import {
  createIdGenerator,
  createShardRouter,
  DEFAULT_ID_GENERATOR_OPTIONS,
  DEFAULT_RESHARDING_PLAN_OPTIONS,
  DEFAULT_SHARD_ROUTER_OPTIONS,
  InvalidArgumentError,
  isShardingError,
  planResharding,
  type ShardRouter,
  type ShardRouterOptions,
} from '../src/index.js'

// Pools connect lazily: nothing here touches a server.
const url = 'mysql://nobody@127.0.0.1:1/none'
const shards = [{ id: 's0', primary: url, replicas: [url] }]

async function withRouter(options: Partial<ShardRouterOptions>, use: (r: ShardRouter) => unknown) {
  const r = createShardRouter({ shards, healthCheckInterval: 0, ...options })
  try {
    await use(r)
  } finally {
    await r.close()
  }
}

describe('createShardRouter options', () => {
  it('keeps the default of an option given as undefined, nested ones included', async () => {
    const unset: Partial<ShardRouterOptions> = {
      slots: undefined,
      consistency: undefined,
      maxReplicaLag: undefined,
      boundedLag: undefined,
      gtidWaitTimeout: undefined,
      queryTimeout: undefined,
      connectTimeout: undefined,
      connectionLimit: undefined,
      scatterTimeout: undefined,
      noHealthyReplica: undefined,
      onShardError: undefined,
      outlierDetection: { consecutiveFailures: undefined },
      primaryBreaker: { resetTimeout: undefined },
    }
    await withRouter(unset, (r) => expect(r.slots).toBe(DEFAULT_SHARD_ROUTER_OPTIONS.slots))
  })

  it('takes durations as milliseconds or strings with a unit', async () => {
    await withRouter(
      {
        maxReplicaLag: '10s',
        boundedLag: '0ms',
        gtidWaitTimeout: '250ms',
        queryTimeout: '3s',
        connectTimeout: 1000,
        scatterTimeout: '1m',
        primaryBreaker: { resetTimeout: '5s' },
        outlierDetection: { baseEjectionTime: '30s' },
      },
      (r) => expect(r.shardIds()).toEqual(['s0']),
    )
  })

  it('refuses a bad duration with an InvalidArgumentError naming the option', () => {
    for (const [name, value] of [
      ['queryTimeout', '30'],
      ['queryTimeout', 0],
      ['gtidWaitTimeout', 'soon'],
      ['maxReplicaLag', -1],
      ['healthCheckInterval', Number.NaN],
      ['scatterTimeout', '-5s'],
    ] as const) {
      const make = () => createShardRouter({ shards, [name]: value })
      expect(make, `${name}: ${String(value)}`).toThrow(InvalidArgumentError)
      expect(make).toThrow(new RegExp(`^invalid option "${name}": expected a .*duration`))
    }
  })

  it('refuses bad nested options of the balancer and breaker with its own InvalidArgumentError', () => {
    const breaker = () =>
      createShardRouter({ shards, healthCheckInterval: 0, primaryBreaker: { resetTimeout: -1 } })
    expect(breaker).toThrow(InvalidArgumentError)
    expect(breaker).toThrow(/^invalid option "primaryBreaker\.resetTimeout"/)
    let caught: unknown
    try {
      createShardRouter({ shards, outlierDetection: { consecutiveFailures: 0 } })
    } catch (error) {
      caught = error
    }
    expect(isShardingError(caught)).toBe(true)
    expect(caught).toBeInstanceOf(InvalidArgumentError)
  })

  it('names the shard option that is wrong, by index', () => {
    expect(() => createShardRouter({ shards: [] })).toThrow(/^invalid option "shards"/)
    expect(() => createShardRouter({ shards: [{ id: 'a b', primary: url }] })).toThrow(
      /^invalid option "shards\[0\]\.id"/,
    )
    expect(() =>
      createShardRouter({
        shards: [
          { id: 'a', primary: url },
          { id: 'a', primary: url },
        ],
      }),
    ).toThrow(/^invalid option "shards\[1\]\.id": expected an id no other shard has, got "a"$/)
    expect(() => createShardRouter({ shards: [{ id: 'a', primary: 42 as never }] })).toThrow(
      /^invalid option "shards\[0\]\.primary"/,
    )
    expect(() =>
      createShardRouter({ shards: [{ id: 'a', primary: url, replicas: url as never }] }),
    ).toThrow(/^invalid option "shards\[0\]\.replicas"/)
    expect(() => createShardRouter({ shards: [{ id: 'a', primary: url, weight: 0 }] })).toThrow(
      'invalid option "shards[0].weight": expected a positive number, got 0',
    )
    expect(() => createShardRouter({ shards, ring: { pointsPerWeight: 0 } })).toThrow(
      /^invalid option "ring\.pointsPerWeight"/,
    )
  })

  it('names the secret that is too short by index, and never shows it', () => {
    const good = 'a-secret-of-at-least-thirty-two-characters'
    const make = () => createShardRouter({ shards, secrets: [good, 'hunter2'] })
    expect(make).toThrow(
      'invalid option "secrets[1]": expected a string of at least 32 characters, got a string of 7 characters',
    )
    expect(make).not.toThrow(/hunter2/)
  })

  it('refuses a bad per-call duration as an invalid argument, before anything is sent', async () => {
    await withRouter({}, async (r) => {
      await expect(r.query(1, 'SELECT 1', [], { timeout: 'soon' as never })).rejects.toThrow(
        /^invalid argument "timeout": expected a positive duration/,
      )
      await expect(
        r.query(1, 'SELECT 1', [], { consistency: 'bounded', maxLag: '30' as never }),
      ).rejects.toThrow(/^invalid argument "maxLag"/)
      await expect(r.all('SELECT 1', [], undefined, { timeout: -1 })).rejects.toThrow(
        /^invalid argument "timeout"/,
      )
      await expect(r.transaction(1, async () => 1, { timeout: '1' as never })).rejects.toThrow(
        /^invalid argument "timeout"/,
      )
      expect(() => r.run({ maxLag: 'later' as never }, () => 1)).toThrow(
        /^invalid argument "maxLag"/,
      )
    })
  })

  it('exports frozen defaults', () => {
    expect(Object.isFrozen(DEFAULT_SHARD_ROUTER_OPTIONS)).toBe(true)
    expect(Object.isFrozen(DEFAULT_SHARD_ROUTER_OPTIONS.outlierDetection)).toBe(true)
    expect(Object.isFrozen(DEFAULT_ID_GENERATOR_OPTIONS)).toBe(true)
    expect(Object.isFrozen(DEFAULT_RESHARDING_PLAN_OPTIONS)).toBe(true)
  })
})

describe('createIdGenerator options', () => {
  it('keeps the default of an option given as undefined', () => {
    const ids = createIdGenerator({
      workerId: undefined,
      workerBits: undefined,
      sequenceBits: undefined,
      slotBits: undefined,
      epoch: undefined,
      maxClockBackwards: undefined,
      now: undefined,
    })
    expect(ids.layout).toMatchObject({
      workerBits: DEFAULT_ID_GENERATOR_OPTIONS.workerBits,
      sequenceBits: DEFAULT_ID_GENERATOR_OPTIONS.sequenceBits,
      slotBits: 0,
    })
    expect(ids.next()).toBeGreaterThan(0n)
  })

  it('takes maxClockBackwards as a duration and refuses a bad one naming it', () => {
    let t = 1_800_000_000_000
    const ids = createIdGenerator({ now: () => t, maxClockBackwards: '2s' })
    const first = ids.next()
    t -= 1500
    expect(ids.next()).toBeGreaterThan(first)
    expect(() => createIdGenerator({ maxClockBackwards: '1' as never })).toThrow(
      /^invalid option "maxClockBackwards": expected a non-negative duration/,
    )
    expect(() => createIdGenerator({ workerBits: 23 })).toThrow(
      'invalid option "workerBits": expected an integer from 0 to 22, got 23',
    )
    expect(() => createIdGenerator({ now: 'Date.now' as never })).toThrow(
      'invalid option "now": expected a function, got "Date.now"',
    )
  })
})

describe('planResharding options', () => {
  it('keeps the default slots when given undefined, and names a bad one', () => {
    const shards = [{ id: 'a' }, { id: 'b' }]
    expect(planResharding(shards, shards, { slots: undefined }).slots).toBe(4096)
    expect(() => planResharding(shards, shards, { slots: 1000 })).toThrow(
      'invalid option "slots": expected a power of two up to 65536, got 1000',
    )
    expect(() => planResharding(shards, shards, { pointsPerWeight: -1 })).toThrow(
      InvalidArgumentError,
    )
  })
})

import calculateSlot from 'cluster-key-slot'
import type { Cluster } from 'ioredis'
import { describe, expect, it } from 'vitest'
import type { CircuitState } from '../src/index.js'
import { L2Guards } from '../src/internal/l2Guards.js'

const fail = () => Promise.reject(new Error('boom'))

/**
 * What L2Guards reads of an ioredis Cluster: its slots table and its NAT map. No I/O: the
 * guards only route, so a plain object with the same two fields stands in for the client.
 */
function clusterOf(masters: string[], natMap?: Record<string, { host: string; port: number }>) {
  const slots: string[][] = []
  const per = Math.ceil(16384 / masters.length)
  for (let slot = 0; slot < 16384; slot++) slots[slot] = [masters[Math.floor(slot / per)] as string]
  return { slots, options: { natMap }, isCluster: true } as unknown as Cluster & {
    slots: string[][]
  }
}

function guardsOf(cluster: Cluster, changes: [CircuitState, string][] = []) {
  return new L2Guards(cluster, true, {
    name: 'test',
    timeout: 100,
    windowSize: 10,
    errorThresholdPercentage: 50,
    volumeThreshold: 3,
    resetTimeout: 60_000,
    telemetry: {},
    onStateChange: (state, node) => changes.push([state, node]),
  })
}

/** A key whose slot the `wanted`-th of `of` masters serves (slots split evenly, as clusterOf does). */
const keyOn = (wanted: number, of: number) => {
  const per = Math.ceil(16384 / of)
  for (let n = 0; ; n++) if (Math.floor(calculateSlot(`k${n}`) / per) === wanted) return `k${n}`
}

async function open(guards: L2Guards, key: string) {
  for (let i = 0; i < 3; i++)
    await guards
      .for(key)
      .run('get', fail, undefined, undefined)
      .catch(() => {})
}

describe('L2Guards on a Cluster', () => {
  it('opens only the breaker of the node that serves the failing key; the worst state is reported', async () => {
    const cluster = clusterOf(['10.0.0.1:6379', '10.0.0.2:6379', '10.0.0.3:6379'])
    const changes: [CircuitState, string][] = []
    const guards = guardsOf(cluster, changes)
    const a = keyOn(0, 3)
    const c = keyOn(2, 3)
    expect(guards.for(a)).toBe(guards.for(a))
    expect(guards.for(a)).not.toBe(guards.for(c))
    await open(guards, a)
    expect(guards.for(a).available).toBe(false)
    expect(guards.for(c).available).toBe(true)
    expect(guards.states()).toEqual({ '10.0.0.1:6379': 'open', '10.0.0.3:6379': 'closed' })
    expect(guards.state).toBe('open')
    expect(changes).toEqual([['open', '10.0.0.1:6379']])
    await guards.close()
  })

  it('gives a node one breaker whether the slots table names it mapped or raw (a MOVED reply)', async () => {
    const natMap = { '192.168.1.1:7000': { host: '127.0.0.1', port: 17000 } }
    const cluster = clusterOf(['127.0.0.1:17000'], natMap)
    const guards = guardsOf(cluster)
    const key = keyOn(0, 1)
    const mapped = guards.for(key)
    // ioredis writes a MOVED reply's address as Redis sent it, before its NAT map
    ;(cluster.slots[calculateSlot(key)] as string[])[0] = '192.168.1.1:7000'
    expect(guards.for(key)).toBe(mapped)
    expect(Object.keys(guards.states())).toEqual(['127.0.0.1:17000'])
    await guards.close()
  })

  it('drops the breaker of a node that no longer serves slots (a failover): the worst state is the live nodes’', async () => {
    const cluster = clusterOf(['10.0.0.1:6379', '10.0.0.2:6379'])
    const guards = guardsOf(cluster)
    const a = keyOn(0, 2)
    await open(guards, a)
    expect(guards.state).toBe('open')
    // the replica 10.0.0.9 promoted: the slots move to it
    for (let slot = 0; slot < 16384; slot++)
      if (cluster.slots[slot]?.[0] === '10.0.0.1:6379') cluster.slots[slot] = ['10.0.0.9:6379']
    expect(guards.for(a).available).toBe(true)
    expect(guards.states()).toEqual({ '10.0.0.9:6379': 'closed' })
    expect(guards.state).toBe('closed')
    await guards.close()
  })
})

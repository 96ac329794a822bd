import { afterEach, describe, expect, it } from 'vitest'
import {
  createBalancer,
  createHealthChecker,
  type HealthChecker,
  InvalidArgumentError,
} from '../src/index.js'
import { type Backend, startBackends } from './fixtures/backend.js'

let cleanup: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const fn of cleanup.reverse()) await fn()
  cleanup = []
})

function track<T extends { close(): Promise<void> }>(x: T): T {
  cleanup.push(() => x.close())
  return x
}

async function backends(...names: string[]): Promise<Backend[]> {
  const list = await startBackends(...names)
  cleanup.push(async () => {
    await Promise.all(list.map((b) => b.kill()))
  })
  return list
}

describe('createHealthChecker', () => {
  it('marks an endpoint unhealthy after `fall` failed HTTP checks and healthy after `rise` passes', async () => {
    const [a, b] = await backends('a', 'b')
    const balancer = track(createBalancer({ endpoints: [a!.url, b!.url] }))
    const checker: HealthChecker = track(
      createHealthChecker({
        balancer,
        check: { type: 'http', path: '/health' },
        interval: 60_000,
        rise: 2,
        fall: 2,
      }),
    )
    b!.healthy = false
    await checker.checkNow()
    expect(balancer.get(b!.url)!.healthy).toBe(true)
    await checker.checkNow()
    expect(balancer.get(b!.url)!.healthy).toBe(false)
    expect(checker.stats().unhealthy).toEqual([b!.url])
    b!.healthy = true
    await checker.checkNow()
    expect(balancer.get(b!.url)!.healthy).toBe(false)
    await checker.checkNow()
    expect(balancer.get(b!.url)!.healthy).toBe(true)
    expect(balancer.get(a!.url)!.healthy).toBe(true)
  })

  it('checks TCP reachability: a closed port fails, an open one passes', async () => {
    const [a, b] = await backends('a', 'b')
    const balancer = track(createBalancer({ endpoints: [a!.url, b!.url] }))
    const checker = track(
      createHealthChecker({ balancer, check: { type: 'tcp' }, interval: 60_000, fall: 1 }),
    )
    await b!.kill()
    await checker.checkNow()
    expect(balancer.get(a!.url)!.healthy).toBe(true)
    expect(balancer.get(b!.url)!.healthy).toBe(false)
  })

  it('runs a function check on the interval, failing on false, throws and timeouts', async () => {
    const verdicts = new Map<string, 'ok' | 'false' | 'throw' | 'hang'>([
      ['ok', 'ok'],
      ['false', 'false'],
      ['throw', 'throw'],
      ['hang', 'hang'],
    ])
    const balancer = track(createBalancer({ endpoints: [...verdicts.keys()], panicThreshold: 0 }))
    const checks: string[] = []
    const checker = track(
      createHealthChecker({
        balancer,
        interval: 20,
        timeout: 50,
        fall: 1,
        check: (endpoint) => {
          const v = verdicts.get(endpoint.id)
          if (v === 'false') return false
          if (v === 'throw') throw new Error('boom')
          if (v === 'hang') return new Promise<boolean>(() => {})
          return true
        },
      }),
    )
    checker.on('checked', (e) => checks.push(`${e.endpoint.id}:${e.healthy}`))
    const started = Date.now()
    while (balancer.endpoints().filter((e) => !e.healthy).length < 3) {
      if (Date.now() - started > 2000) throw new Error('checks did not run on the interval')
      await new Promise((r) => setTimeout(r, 10))
    }
    expect(
      balancer
        .endpoints()
        .filter((e) => e.healthy)
        .map((e) => e.id),
    ).toEqual(['ok'])
    expect(checks).toContain('ok:true')
    expect(checks).toContain('hang:false')
  })

  it('rejects bad options, naming them', () => {
    const balancer = createBalancer({ endpoints: ['http://127.0.0.1:1'] })
    expect(() => createHealthChecker({ balancer, interval: 0 })).toThrow(/"interval"/)
    expect(() => createHealthChecker({ balancer, rise: 1.5 })).toThrow(/"rise"/)
    expect(() => createHealthChecker({ balancer, check: { type: 'udp' } as never })).toThrow(
      InvalidArgumentError,
    )
    expect(() => createHealthChecker({ balancer: {} as never })).toThrow(/"balancer"/)
  })
})

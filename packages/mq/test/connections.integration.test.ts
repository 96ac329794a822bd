import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { amqpNames, amqpUrl, createFaultProxy, type FaultProxy } from '@ballast/testkit'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Broker, createBroker, type ReconnectScheduledEvent } from '../src/index.js'
import { backoffDelay } from '../src/internal/connection.js'
import { closeAll, until, within } from './support/bounded.js'

const names = amqpNames('mqconn')
let url: string
const proxies: FaultProxy[] = []
const brokers: Broker[] = []

beforeAll(async () => {
  url = await amqpUrl()
})
afterAll(async () => {
  // never leave the shared broker blocking publishers, whatever happened in the test
  await alarm('clear')
  await closeAll(brokers.map((b) => () => b.close()))
  await closeAll([...proxies.map((p) => () => p.close()), () => names.cleanup()], 10_000)
}, 30_000)

function broker(options: Parameters<typeof createBroker>[0]): Broker {
  const b = createBroker({ shutdownTimeout: 2000, ...options })
  brokers.push(b)
  return b
}

/** A fault proxy in front of the broker: a stand-in for one node of a cluster. */
async function node(): Promise<FaultProxy> {
  const u = new URL(url)
  const proxy = await createFaultProxy({ host: u.hostname, port: Number(u.port || 5672) })
  proxies.push(proxy)
  return proxy
}

describe('backoffDelay', () => {
  const backoff = { initialDelay: 100, maxDelay: 1000, factor: 2, jitter: 0.2 }

  it('grows by the factor from the initial delay, up to the cap', () => {
    const middle = () => 0.5
    expect([1, 2, 3, 4, 5, 6].map((a) => backoffDelay(backoff, a, middle))).toEqual([
      100, 200, 400, 800, 1000, 1000,
    ])
  })

  it('spreads each delay by +-jitter, never past the cap', () => {
    expect(backoffDelay(backoff, 3, () => 0)).toBe(320)
    expect(backoffDelay(backoff, 3, () => 1)).toBe(480)
    expect(backoffDelay(backoff, 10, () => 1)).toBe(1000)
    expect(backoffDelay(backoff, 10, () => 0)).toBe(800)
    const spread = new Set(Array.from({ length: 50 }, () => backoffDelay(backoff, 2)))
    expect(spread.size).toBeGreaterThan(10)
    for (const d of spread) expect(d).toBeGreaterThanOrEqual(160)
    for (const d of spread) expect(d).toBeLessThanOrEqual(240)
  })
})

describe('Broker connections', () => {
  it('reconnects with growing, jittered delays while every node refuses, then connects when one answers', async () => {
    const a = await node()
    const b = await node()
    a.refuse()
    b.refuse()
    const events: (ReconnectScheduledEvent & { at: number })[] = []
    const mq = broker({
      urls: [a.url(url), b.url(url)],
      reconnect: { initialDelay: 100, maxDelay: 800, factor: 2, jitter: 0.2 },
    })
    mq.on('reconnect-scheduled', (e) => {
      if (e.role === 'publisher') events.push({ ...e, at: Date.now() })
    })
    await until(() => events.length >= 5, 10_000, '5 reconnect attempts')
    const delays = events.slice(0, 5).map((e) => e.delayMs)
    const bases = [100, 200, 400, 800, 800]
    delays.forEach((d, i) => {
      expect(d).toBeGreaterThanOrEqual((bases[i] as number) * 0.8)
      expect(d).toBeLessThanOrEqual(Math.min(800, (bases[i] as number) * 1.2))
    })
    expect(events.slice(0, 5).map((e) => e.attempt)).toEqual([1, 2, 3, 4, 5])
    // each attempt waited its delay
    for (let i = 1; i < 5; i++) {
      const waited = (events[i]?.at as number) - (events[i - 1]?.at as number)
      expect(waited).toBeGreaterThanOrEqual((events[i - 1]?.delayMs as number) - 5)
    }
    b.restore()
    await within(mq.ready(), 5000, 'connecting once a node answers')
    expect(mq.stats().connected.publisher).toBe(true)
  })

  it('connects to the next node when one refuses, and fails over to another when its node goes away: lost 0', async () => {
    const a = await node()
    const b = await node()
    a.refuse()
    const queue = names.queue('failover')
    const connected: { role: string; url: string }[] = []
    const mq = broker({
      urls: [a.url(url), b.url(url)],
      reconnect: { initialDelay: 50, maxDelay: 200 },
      topology: { queues: [{ name: queue, retry: false, deadLetter: false }] },
    })
    mq.on('connected', (e) => connected.push(e))
    const got = new Set<number>()
    await mq.consume(queue, (m) => {
      got.add((m.body as { n: number }).n)
    })
    await mq.ready()
    const via = (proxy: FaultProxy) => (c: { url: string }) =>
      new URL(c.url).port === String(proxy.port)
    expect(connected.map(via(b))).toEqual([true, true])
    for (let n = 0; n < 100; n++) await mq.publish('', queue, { n })
    const before = mq.stats().reconnects
    // node b goes away; a is back
    a.restore()
    b.refuse()
    b.cut()
    const sends = Array.from({ length: 100 }, (_, i) => mq.publish('', queue, { n: 100 + i }))
    await within(Promise.all(sends), 10_000, 'the publishes during the failover')
    await until(
      () => got.size === 200,
      10_000,
      'every message consumed',
      () => mq.stats(),
    )
    const after = connected.slice(2)
    expect(after.map((c) => c.role).sort()).toEqual(['consumer', 'publisher'])
    expect(after.every(via(a))).toBe(true)
    expect(mq.stats().reconnects).toEqual({
      publisher: before.publisher + 1,
      consumer: before.consumer + 1,
    })
  })

  it('notices a connection that went silent (no reset) by its heartbeats, and reconnects once the node answers', async () => {
    const a = await node()
    const queue = names.queue('silent')
    const mq = broker({
      urls: a.url(url),
      heartbeatInterval: 1000,
      connectTimeout: 1000,
      reconnect: { initialDelay: 50, maxDelay: 200 },
      topology: { queues: [{ name: queue, retry: false, deadLetter: false }] },
    })
    await mq.ready()
    const lost: number[] = []
    mq.on('disconnected', (e) => {
      if (e.role === 'publisher') lost.push(Date.now())
    })
    const silent = Date.now()
    a.blackhole() // bytes vanish both ways; no FIN, no RST
    await until(() => lost.length === 1, 6000, 'the silent connection to be dropped')
    // two missed heartbeats of 1 s (amqplib checks each half period)
    expect((lost[0] as number) - silent).toBeLessThan(4000)
    const late = mq.publish('', queue, 'after the silence')
    a.restore()
    await within(late, 10_000, 'the publish once the node answers again')
    expect(mq.stats().connected.publisher).toBe(true)
  })

  it('keeps consuming and acking while the broker blocks the publisher connection (memory alarm)', async () => {
    const queue = names.queue('alarm')
    const mq = broker({
      urls: url,
      topology: { queues: [{ name: queue, retry: false, deadLetter: false }] },
    })
    const N = 50
    for (let n = 0; n < N; n++) await mq.publish('', queue, { n })
    const blocked: string[] = []
    mq.on('blocked', (e) => blocked.push(e.role))
    mq.on('unblocked', (e) => blocked.push(`un${e.role}`))
    let late: Promise<void> | undefined
    let lateDone = false
    const got: number[] = []
    await alarm('set')
    try {
      // publishing now blocks the publisher connection
      late = mq.publish('', queue, { n: N })
      void late.then(() => {
        lateDone = true
      })
      await until(() => blocked.includes('publisher'), 10_000, 'the publisher to be blocked')
      // prefetch 10 of 50: the broker sends the rest only as it reads our acks
      await mq.consume(
        queue,
        (m) => {
          got.push((m.body as { n: number }).n)
        },
        { prefetch: 10 },
      )
      await until(
        () => got.length === N,
        10_000,
        'the queued messages consumed',
        () => ({
          got: got.length,
          stats: mq.stats(),
        }),
      )
      expect(lateDone).toBe(false)
      expect(mq.stats().acked).toBe(N)
    } finally {
      await alarm('clear')
    }
    await within(late, 10_000, 'the publish blocked by the alarm')
    await until(() => got.length === N + 1, 10_000, 'the late message consumed')
    expect(blocked).toContain('unpublisher')
    expect(got.sort((x, y) => x - y)).toEqual(Array.from({ length: N + 1 }, (_, n) => n))
  })
})

/** Sets or clears a memory alarm on the local RabbitMQ node, as a real one would. */
async function alarm(action: 'set' | 'clear'): Promise<void> {
  const call =
    action === 'set'
      ? 'rabbit_alarm:set_alarm({{resource_limit, memory, node()}, []}).'
      : 'rabbit_alarm:clear_alarm({resource_limit, memory, node()}).'
  await promisify(execFile)('rabbitmqctl', ['eval', call], { timeout: 30_000 })
}

import { connect, type Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { createFaultProxy, disposables, type FaultProxy } from '../src/index.js'
import { closedPort, sleep, tcpServer, until } from './helpers.js'

const bin = disposables()
afterEach(() => bin.cleanup())

async function echoBehindProxy() {
  const echo = await tcpServer((socket) => socket.pipe(socket))
  bin.defer(() => echo.close())
  const proxy = bin.use(await createFaultProxy({ host: '127.0.0.1', port: echo.port }))
  return { echo, proxy }
}

interface Client {
  socket: Socket
  received(): string
  closed: Promise<void>
}

async function client(proxy: FaultProxy): Promise<Client> {
  const socket = connect({ host: proxy.host, port: proxy.port })
  socket.on('error', () => {})
  bin.defer(() => socket.destroy())
  let data = ''
  socket.on('data', (chunk) => {
    data += chunk.toString()
  })
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()))
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve)
    socket.once('error', reject)
  })
  return { socket, received: () => data, closed }
}

async function roundTrip(c: Client, text: string, timeoutMs = 2000) {
  const before = c.received().length
  c.socket.write(text)
  await until(() => c.received().length >= before + text.length, timeoutMs, `echo of ${text}`)
  return c.received().slice(before)
}

describe('createFaultProxy', () => {
  it('listens on an ephemeral 127.0.0.1 port and forwards both ways', async () => {
    const { proxy, echo } = await echoBehindProxy()
    expect(proxy.host).toBe('127.0.0.1')
    expect(proxy.port).toBeGreaterThan(0)
    expect(proxy.port).not.toBe(echo.port)
    expect(proxy.address).toBe(`127.0.0.1:${proxy.port}`)
    const c = await client(proxy)
    expect(await roundTrip(c, 'hello')).toBe('hello')
    expect(proxy.stats()).toMatchObject({
      mode: 'pass',
      open: 1,
      accepted: 1,
      bytesToServer: 5,
      bytesToClient: 5,
    })
  })

  it('rejects invalid targets and latencies', async () => {
    await expect(createFaultProxy({ host: '', port: 1 })).rejects.toThrow(/invalid option "host"/)
    await expect(createFaultProxy({ host: '127.0.0.1', port: 70000 })).rejects.toThrow(
      /invalid option "port"/,
    )
    const { proxy } = await echoBehindProxy()
    expect(() => proxy.setLatency(-1)).toThrow(/invalid latency/)
    expect(() => proxy.setLatency(Number.NaN)).toThrow(/invalid latency/)
  })

  it('rewrites URLs to go through the proxy', async () => {
    const { proxy } = await echoBehindProxy()
    const p = proxy.port
    expect(proxy.url('redis://127.0.0.1:6379/0')).toBe(`redis://127.0.0.1:${p}/0`)
    expect(proxy.url('mysql://root@localhost:3306/test?charset=utf8mb4')).toBe(
      `mysql://root@127.0.0.1:${p}/test?charset=utf8mb4`,
    )
    expect(proxy.url('amqp://guest:guest@127.0.0.1:5672')).toBe(`amqp://guest:guest@127.0.0.1:${p}`)
  })

  describe('setLatency', () => {
    it('delays each direction by the latency and keeps the byte order', async () => {
      const { proxy } = await echoBehindProxy()
      const c = await client(proxy)
      proxy.setLatency(60)
      const started = Date.now()
      const parts = Array.from({ length: 40 }, (_, i) => `<${i}>`)
      for (const part of parts) {
        c.socket.write(part)
        await sleep(1)
      }
      const expected = parts.join('')
      await until(() => c.received().length >= expected.length, 3000, 'all parts')
      expect(c.received()).toBe(expected)
      expect(Date.now() - started).toBeGreaterThanOrEqual(120)
      expect(proxy.stats().latencyMs).toBe(60)

      proxy.setLatency(0)
      const again = Date.now()
      await roundTrip(c, 'fast')
      expect(Date.now() - again).toBeLessThan(60)
    })
  })

  describe('cut', () => {
    it('destroys every open connection on both sides and still accepts new ones', async () => {
      const { proxy, echo } = await echoBehindProxy()
      const a = await client(proxy)
      const b = await client(proxy)
      await roundTrip(a, 'a')
      await roundTrip(b, 'b')
      expect(echo.sockets.size).toBe(2)
      expect(proxy.cut()).toBe(2)
      await Promise.all([a.closed, b.closed])
      await until(() => echo.sockets.size === 0, 2000, 'server side to close')
      expect(proxy.stats()).toMatchObject({ open: 0, cut: 2 })

      const c = await client(proxy)
      expect(await roundTrip(c, 'after')).toBe('after')
    })
  })

  describe('refuse', () => {
    it('closes new connections at once and leaves open ones alone', async () => {
      const { proxy } = await echoBehindProxy()
      const open = await client(proxy)
      proxy.refuse()
      const refused = connect({ host: proxy.host, port: proxy.port })
      bin.defer(() => refused.destroy())
      const outcome = await new Promise<string>((resolve) => {
        refused.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message))
        refused.on('close', () => resolve('closed'))
      })
      expect(['ECONNRESET', 'closed']).toContain(outcome)
      expect(proxy.stats()).toMatchObject({ mode: 'refuse', refused: 1, accepted: 1 })
      expect(await roundTrip(open, 'still')).toBe('still')

      proxy.restore()
      expect(await roundTrip(await client(proxy), 'back')).toBe('back')
    })
  })

  describe('blackhole', () => {
    it('swallows bytes on open and new connections until restored', async () => {
      const { proxy } = await echoBehindProxy()
      const talker = await client(proxy)
      const idle = await client(proxy)
      await roundTrip(talker, 'x')
      proxy.blackhole()
      talker.socket.write('lost')
      const held = await client(proxy)
      const heldQuiet = await client(proxy)
      held.socket.write('also lost')
      await sleep(150)
      expect(talker.received()).toBe('x')
      expect(held.received()).toBe('')
      expect(proxy.stats()).toMatchObject({ mode: 'blackhole', open: 4, bytesSwallowed: 13 })

      proxy.restore()
      // their byte streams lost data: closed rather than resumed out of step
      await Promise.all([talker.closed, held.closed])
      expect(proxy.stats()).toMatchObject({ mode: 'pass', reset: 2, open: 2 })
      // connections that lost nothing carry on; one held without a server gets one now
      expect(await roundTrip(idle, 'idle ok')).toBe('idle ok')
      expect(await roundTrip(heldQuiet, 'held ok')).toBe('held ok')
    })

    it('swallows bytes that were already delayed when it started', async () => {
      const { proxy } = await echoBehindProxy()
      const c = await client(proxy)
      proxy.setLatency(100)
      c.socket.write('in flight')
      await sleep(20)
      proxy.blackhole()
      await sleep(250)
      expect(c.received()).toBe('')
      expect(proxy.stats().bytesSwallowed).toBe('in flight'.length)
    })
  })

  it('closes the client when the server is down', async () => {
    const proxy = bin.use(await createFaultProxy({ host: '127.0.0.1', port: await closedPort() }))
    const c = await client(proxy)
    await c.closed
    expect(proxy.stats()).toMatchObject({ open: 0, upstreamErrors: 1 })
  })

  describe('close', () => {
    it('destroys every connection and stops listening', async () => {
      const echo = await tcpServer((socket) => socket.pipe(socket))
      bin.defer(() => echo.close())
      const proxy = await createFaultProxy({ host: '127.0.0.1', port: echo.port })
      const c = await client(proxy)
      await roundTrip(c, 'x')
      proxy.setLatency(50)
      c.socket.write('pending')
      await proxy.close()
      await c.closed
      await proxy.close()
      expect(proxy.stats().open).toBe(0)
      const late = connect({ host: '127.0.0.1', port: proxy.port })
      const code = await new Promise<string | undefined>((resolve) =>
        late.on('error', (error: NodeJS.ErrnoException) => resolve(error.code)),
      )
      expect(code).toBe('ECONNREFUSED')
    })
  })
})

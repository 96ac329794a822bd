import { connect, createServer, type Server, type Socket } from 'node:net'

/** Where a {@link FaultProxy} forwards to. */
export interface FaultProxyOptions {
  /** The server's host. */
  host: string
  /** The server's port. */
  port: number
  /**
   * Latency added to every chunk in both directions from the start, in milliseconds.
   * @default 0
   */
  latencyMs?: number
}

/** What a {@link FaultProxy} does with traffic right now. */
export type FaultMode = 'pass' | 'refuse' | 'blackhole'

/** Counters of a {@link FaultProxy}. */
export interface FaultProxyStats {
  /** The current mode. */
  mode: FaultMode
  /** Latency added per chunk and direction, in milliseconds. */
  latencyMs: number
  /** Connections open now. */
  open: number
  /** Connections accepted (forwarded or black-holed) since creation. */
  accepted: number
  /** Connections closed at once because the proxy was refusing. */
  refused: number
  /** Connections destroyed by {@link FaultProxy.cut}. */
  cut: number
  /** Connections closed by {@link FaultProxy.restore} because the black hole ate some of their bytes. */
  reset: number
  /** Bytes delivered from clients to the server. */
  bytesToServer: number
  /** Bytes delivered from the server to clients. */
  bytesToClient: number
  /** Bytes swallowed by the black hole, both directions. */
  bytesSwallowed: number
  /** Connections to the server that failed (e.g. the server was down). */
  upstreamErrors: number
}

/**
 * A TCP proxy on an ephemeral 127.0.0.1 port in front of one server, for outage tests that
 * must not stop the shared servers: add latency, cut every connection, refuse or black-hole
 * new ones, restore.
 */
export interface FaultProxy {
  /** The proxy's host: always `127.0.0.1`. */
  readonly host: string
  /** The proxy's port. */
  readonly port: number
  /** `host:port` of the proxy. */
  readonly address: string
  /** The server the proxy forwards to. */
  readonly target: { readonly host: string; readonly port: number }
  /** Delays every chunk, in both directions, by `ms` milliseconds; order is kept. 0 turns it off. */
  setLatency(ms: number): void
  /** Destroys every open connection, both sides. New connections are still accepted. Returns how many were cut. */
  cut(): number
  /** Closes new connections as soon as they are accepted (TCP reset). Open connections are left alone. */
  refuse(): void
  /**
   * Accepts new connections but never connects them to the server, and stops delivering
   * bytes on open connections: everything sent is swallowed, so clients hang until their
   * own timeouts fire.
   */
  blackhole(): void
  /**
   * Back to forwarding. Connections that lost bytes to the black hole are closed (their byte
   * streams no longer line up); connections that were only held get connected to the server.
   */
  restore(): void
  /** Rewrites a URL's host and port to go through the proxy, e.g. `redis://127.0.0.1:6379/0`. */
  url(url: string): string
  /** Counters and the current mode. */
  stats(): FaultProxyStats
  /** Stops listening and destroys every connection; leaves no open handle. */
  close(): Promise<void>
}

interface Chunk {
  data: Buffer | null // null: the sender ended its side
  due: number
}

class Lane {
  readonly #queue: Chunk[] = []
  #timer: NodeJS.Timeout | undefined
  #waitingForDrain = false

  constructor(
    readonly source: Socket,
    readonly link: Link,
    readonly toServer: boolean,
  ) {}

  get destination(): Socket | undefined {
    return this.toServer ? this.link.upstream : this.link.client
  }

  push(data: Buffer | null): void {
    const latency = this.link.proxy.latencyMs
    if (latency === 0 && this.#queue.length === 0) {
      this.#deliver(data)
      return
    }
    this.#queue.push({ data, due: Date.now() + latency })
    if (!this.#timer) this.#schedule()
  }

  #schedule(): void {
    const head = this.#queue[0]
    if (!head) return
    this.#timer = setTimeout(() => this.#drain(), Math.max(0, head.due - Date.now()))
  }

  #drain(): void {
    this.#timer = undefined
    const now = Date.now()
    while (this.#queue.length > 0 && this.#queue[0]!.due <= now) {
      this.#deliver(this.#queue.shift()!.data)
    }
    this.#schedule()
  }

  #deliver(data: Buffer | null): void {
    const proxy = this.link.proxy
    const destination = this.destination
    if (proxy.mode === 'blackhole' || !destination || this.link.held) {
      if (data) {
        this.link.swallowed = true
        proxy.counters.bytesSwallowed += data.length
      }
      return
    }
    if (destination.destroyed) return
    if (data === null) {
      destination.end()
      return
    }
    if (this.toServer) proxy.counters.bytesToServer += data.length
    else proxy.counters.bytesToClient += data.length
    if (!destination.write(data) && !this.#waitingForDrain) {
      this.#waitingForDrain = true
      this.source.pause()
      destination.once('drain', () => {
        this.#waitingForDrain = false
        this.source.resume()
      })
    }
  }

  dispose(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    this.#queue.length = 0
  }
}

class Link {
  upstream: Socket | undefined
  /** Accepted during a black hole and not connected to the server yet. */
  held = false
  swallowed = false
  closed = false
  readonly #lanes: Lane[] = []

  constructor(
    readonly proxy: TcpFaultProxy,
    readonly client: Socket,
  ) {
    client.setNoDelay(true)
    client.on('error', () => this.destroy())
    client.on('close', () => this.destroy())
    const lane = new Lane(client, this, true)
    this.#lanes.push(lane)
    client.on('data', (data: Buffer) => lane.push(data))
    client.on('end', () => lane.push(null))
  }

  connectUpstream(): void {
    this.held = false
    const upstream = connect({ host: this.proxy.target.host, port: this.proxy.target.port })
    this.upstream = upstream
    upstream.setNoDelay(true)
    upstream.on('error', () => {
      this.proxy.counters.upstreamErrors += 1
      this.destroy()
    })
    upstream.on('close', () => this.destroy())
    const lane = new Lane(upstream, this, false)
    this.#lanes.push(lane)
    upstream.on('data', (data: Buffer) => lane.push(data))
    upstream.on('end', () => lane.push(null))
  }

  destroy(): void {
    if (this.closed) return
    this.closed = true
    for (const lane of this.#lanes) lane.dispose()
    this.client.destroy()
    this.upstream?.destroy()
    this.proxy.links.delete(this)
  }
}

type Counters = Omit<FaultProxyStats, 'mode' | 'latencyMs' | 'open'>

class TcpFaultProxy implements FaultProxy {
  readonly host = '127.0.0.1'
  port = 0
  readonly target: { readonly host: string; readonly port: number }
  readonly links = new Set<Link>()
  readonly counters: Counters = {
    accepted: 0,
    refused: 0,
    cut: 0,
    reset: 0,
    bytesToServer: 0,
    bytesToClient: 0,
    bytesSwallowed: 0,
    upstreamErrors: 0,
  }
  mode: FaultMode = 'pass'
  latencyMs = 0
  readonly #server: Server
  #closed: Promise<void> | undefined

  constructor(options: FaultProxyOptions) {
    this.target = { host: options.host, port: options.port }
    this.#server = createServer((socket) => this.#accept(socket))
    this.#server.on('error', () => {
      // listen errors surface through listen(); later ones only concern accepted sockets
    })
  }

  get address(): string {
    return `${this.host}:${this.port}`
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject)
      this.#server.listen(0, this.host, () => {
        this.#server.off('error', reject)
        resolve()
      })
    })
    const address = this.#server.address()
    if (address === null || typeof address === 'string')
      throw new Error('fault proxy: no TCP address')
    this.port = address.port
  }

  #accept(socket: Socket): void {
    if (this.#closed) {
      socket.destroy()
      return
    }
    if (this.mode === 'refuse') {
      this.counters.refused += 1
      socket.on('error', () => {})
      socket.resetAndDestroy()
      return
    }
    this.counters.accepted += 1
    const link = new Link(this, socket)
    this.links.add(link)
    if (this.mode === 'blackhole') link.held = true
    else link.connectUpstream()
  }

  setLatency(ms: number): void {
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) {
      throw new TypeError(
        `invalid latency: expected a non-negative number of milliseconds, got ${ms}`,
      )
    }
    this.latencyMs = ms
  }

  cut(): number {
    const links = [...this.links]
    for (const link of links) link.destroy()
    this.counters.cut += links.length
    return links.length
  }

  refuse(): void {
    this.mode = 'refuse'
  }

  blackhole(): void {
    this.mode = 'blackhole'
  }

  restore(): void {
    const wasBlackhole = this.mode === 'blackhole'
    this.mode = 'pass'
    if (!wasBlackhole) return
    for (const link of [...this.links]) {
      if (link.swallowed) {
        this.counters.reset += 1
        link.destroy()
      } else if (link.held) {
        link.connectUpstream()
      }
    }
  }

  url(url: string): string {
    const parsed = new URL(url)
    parsed.hostname = this.host
    parsed.port = String(this.port)
    return parsed.toString()
  }

  stats(): FaultProxyStats {
    return { mode: this.mode, latencyMs: this.latencyMs, open: this.links.size, ...this.counters }
  }

  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = new Promise<void>((resolve) => {
        this.#server.close(() => resolve())
      })
      for (const link of [...this.links]) link.destroy()
    }
    return this.#closed
  }
}

/**
 * Starts a {@link FaultProxy} on an ephemeral 127.0.0.1 port in front of `host:port`.
 *
 * @example
 * ```ts
 * const proxy = await createFaultProxy({ host: '127.0.0.1', port: 6379 })
 * const redis = new Redis(proxy.url('redis://127.0.0.1:6379'))
 * proxy.setLatency(50) // every reply now takes >= 100 ms (50 each way)
 * proxy.cut()          // the client sees its connection close
 * proxy.restore()
 * await proxy.close()
 * ```
 */
export async function createFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  if (typeof options?.host !== 'string' || options.host.length === 0) {
    throw new TypeError(
      `invalid option "host": expected a host name, got ${JSON.stringify(options?.host)}`,
    )
  }
  if (!Number.isInteger(options.port) || options.port <= 0 || options.port > 65535) {
    throw new TypeError(`invalid option "port": expected a TCP port, got ${options.port}`)
  }
  const proxy = new TcpFaultProxy(options)
  if (options.latencyMs !== undefined) proxy.setLatency(options.latencyMs)
  await proxy.listen()
  return proxy
}

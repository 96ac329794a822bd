/**
 * The servers of the proxy benchmark, each run in its own child process (see proxy.bench.ts):
 * the two backends, and one Node proxy per contestant in front of them. A child started with
 * LB_BENCH_SERVE=<name> listens on an ephemeral port on 127.0.0.1, reports it over IPC and exits
 * on 'stop'.
 */
import { Agent, createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createProxy } from '@ballast/lb'
import fastifyHttpProxy from '@fastify/http-proxy'
import replyFrom from '@fastify/reply-from'
import Fastify from 'fastify'
import httpProxy from 'http-proxy'

export const NODE_PROXIES = [
  '@ballast/lb createProxy',
  'http-proxy',
  '@fastify/reply-from',
  '@fastify/http-proxy',
] as const
export type NodeProxy = (typeof NODE_PROXIES)[number]

const BODY = Buffer.from('hello world\n')

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return (server.address() as AddressInfo).port
}

/** Two backends in this process: a short fixed body, keep-alive. */
async function backends(): Promise<{ ports: number[]; close(): Promise<void> }> {
  const servers = [0, 1].map(() => {
    const s = createServer((req, res) => {
      req.resume()
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': BODY.length })
      res.end(BODY)
    })
    s.keepAliveTimeout = 60_000
    return s
  })
  const ports = await Promise.all(servers.map(listen))
  return {
    ports,
    close: async () => {
      for (const s of servers) s.closeAllConnections()
      await Promise.all(servers.map((s) => new Promise((r) => s.close(r))))
    },
  }
}

async function serve(
  name: NodeProxy,
  targets: string[],
): Promise<{ port: number; close(): Promise<void> }> {
  switch (name) {
    case '@ballast/lb createProxy': {
      const proxy = createProxy({ routes: [{ upstream: targets }] })
      const { port } = await proxy.listen(0, '127.0.0.1')
      return { port, close: () => proxy.close() }
    }
    case 'http-proxy': {
      const proxy = httpProxy.createProxyServer({
        agent: new Agent({ keepAlive: true, maxSockets: 128 }),
      })
      let i = 0
      const server = createServer((req, res) => {
        proxy.web(req, res, { target: targets[i++ & 1] }, () => {
          res.statusCode = 502
          res.end()
        })
      })
      const port = await listen(server)
      return {
        port,
        close: async () => {
          server.closeAllConnections()
          await new Promise((r) => server.close(r))
          proxy.close()
        },
      }
    }
    case '@fastify/reply-from': {
      const app = Fastify({ logger: false })
      await app.register(replyFrom, { base: targets })
      app.all('/*', (request, reply) => reply.from(request.url))
      await app.listen({ port: 0, host: '127.0.0.1' })
      return { port: (app.server.address() as AddressInfo).port, close: () => app.close() }
    }
    case '@fastify/http-proxy': {
      const app = Fastify({ logger: false })
      let i = 0
      await app.register(fastifyHttpProxy, {
        upstream: targets[0]!,
        replyOptions: { getUpstream: () => targets[i++ & 1]! },
      })
      await app.listen({ port: 0, host: '127.0.0.1' })
      return { port: (app.server.address() as AddressInfo).port, close: () => app.close() }
    }
  }
}

const which = process.env.LB_BENCH_SERVE
if (which !== undefined && process.send !== undefined) {
  const served =
    which === 'backends'
      ? await backends().then((b) => ({ port: b.ports[0]!, ports: b.ports, close: b.close }))
      : await serve(which as NodeProxy, (process.env.LB_BENCH_TARGETS ?? '').split(','))
  process.send({ port: served.port, ports: 'ports' in served ? served.ports : [served.port] })
  process.on('message', async (m) => {
    if (m === 'stop') {
      await served.close()
      process.exit(0)
    }
  })
}

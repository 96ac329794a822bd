import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { redisClusterNodes, redisKeyspace, redisUrl } from '@ballast/testkit'
import { Cluster, Redis } from 'ioredis'
import {
  createSessionStore,
  type SessionData,
  type SessionStore,
  type SessionStoreOptions,
} from '../src/index.js'

export const SECRET = 'test-secret-0123456789-abcdefghijklmnop'
export const OLD_SECRET = 'old-secret-0123456789-abcdefghijklmnopq'

export type Topology = 'standalone' | 'cluster'
export const TOPOLOGIES: Topology[] = ['standalone', 'cluster']

/** A client of the given topology (a disposable resource: `close()` quits it). */
export async function connect(topology: Topology): Promise<Redis | Cluster> {
  if (topology === 'standalone') {
    const client = new Redis(await redisUrl(), { lazyConnect: true })
    await client.connect()
    return client
  }
  const client = new Cluster(await redisClusterNodes(), { lazyConnect: true })
  await client.connect()
  return client
}

/** A store on its own key prefix; `dispose()` deletes its keys and closes the store. */
export async function storeOn<T extends SessionData = SessionData>(
  client: Redis | Cluster,
  options: Partial<SessionStoreOptions> = {},
): Promise<{ store: SessionStore<T>; prefix: string; dispose(): Promise<void> }> {
  const keyspace = redisKeyspace(client, 'session')
  const store = createSessionStore<T>({
    redis: client,
    secrets: [SECRET],
    prefix: keyspace.prefix,
    ...options,
  })
  return {
    store,
    prefix: keyspace.prefix,
    async dispose() {
      await store.close()
      await keyspace.cleanup()
    },
  }
}

/** Starts a node:http server on an ephemeral port; `close()` ends every connection. */
export async function listen(
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<{ url: string; server: Server; close(): Promise<void> }> {
  const server = createServer(handler)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

/** The `name=value` part of a Set-Cookie header, or undefined. */
export function cookieOf(response: Response): string | undefined {
  const header = response.headers.getSetCookie()[0]
  return header?.split(';')[0]
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

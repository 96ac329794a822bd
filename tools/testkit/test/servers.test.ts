import { describe, expect, it, vi } from 'vitest'
import {
  isServerUnavailableError,
  parseNodeList,
  type ResolvedServer,
  resolveServer,
  ServerUnavailableError,
  serverStartCommand,
} from '../src/index.js'
import { closedPort, tcpServer } from './helpers.js'

const answers = async () => {}

function fakes(overrides: {
  runtime?: boolean
  local?: 'up' | 'down'
  container?: 'up' | 'fails'
}) {
  const pinged: ResolvedServer[] = []
  const containerRuntimeAnswers = vi.fn(() => overrides.runtime ?? false)
  const startContainer = vi.fn(async (name: string) => {
    if (overrides.container === 'fails') throw new Error('pull access denied')
    return name === 'mysql' ? 'mysql://root@10.0.0.9:49153/test' : `redis://10.0.0.9:49153`
  })
  const ping = vi.fn(async (server: ResolvedServer) => {
    pinged.push(server)
    if (server.source === 'local' && overrides.local === 'down')
      throw new Error('connect ECONNREFUSED')
  })
  return { pinged, containerRuntimeAnswers, startContainer, ping, containerReadyTimeoutMs: 100 }
}

describe('resolveServer', () => {
  describe('resolution order', () => {
    it('takes the URL from the environment first, without asking for a container', async () => {
      const f = fakes({ runtime: true })
      const server = await resolveServer('redis', {
        ...f,
        env: { REDIS_URL: 'redis://10.1.2.3:6390/2' },
      })
      expect(server).toMatchObject({
        name: 'redis',
        url: 'redis://10.1.2.3:6390/2',
        host: '10.1.2.3',
        port: 6390,
        source: 'env',
      })
      expect(f.containerRuntimeAnswers).not.toHaveBeenCalled()
      expect(f.startContainer).not.toHaveBeenCalled()
      expect(f.pinged.map((s) => s.source)).toEqual(['env'])
    })

    it('starts a container when the environment names none and a runtime answers', async () => {
      const f = fakes({ runtime: true })
      const server = await resolveServer('mysql', { ...f, env: { MYSQL_URL: '  ' } })
      expect(server).toMatchObject({ source: 'container', host: '10.0.0.9', port: 49153 })
      expect(f.startContainer).toHaveBeenCalledWith('mysql')
      expect(f.pinged.map((s) => s.source)).toEqual(['container'])
    })

    it('uses the local default when no runtime answers', async () => {
      const f = fakes({ runtime: false })
      const server = await resolveServer('amqp', { ...f, env: {} })
      expect(server).toMatchObject({
        url: 'amqp://guest:guest@127.0.0.1:5672',
        host: '127.0.0.1',
        port: 5672,
        source: 'local',
      })
      expect(f.containerRuntimeAnswers).toHaveBeenCalledOnce()
      expect(f.startContainer).not.toHaveBeenCalled()
    })

    it('falls back to the local default when the container fails, and says so if that fails too', async () => {
      const up = fakes({ runtime: true, container: 'fails' })
      await expect(resolveServer('redis', { ...up, env: {} })).resolves.toMatchObject({
        source: 'local',
      })

      const down = fakes({ runtime: true, container: 'fails', local: 'down' })
      const error = await resolveServer('redis', { ...down, env: {} }).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(ServerUnavailableError)
      expect((error as Error).message).toContain(
        'redis:7 container failed first: pull access denied',
      )
    })

    it('never asks for a container for the topologies', async () => {
      const f = fakes({ runtime: true })
      for (const name of ['mysql-primary', 'mysql-replica', 'redis-cluster'] as const) {
        await expect(resolveServer(name, { ...f, env: {} })).resolves.toMatchObject({
          source: 'local',
        })
      }
      expect(f.containerRuntimeAnswers).not.toHaveBeenCalled()
      expect(f.pinged.map((s) => s.url)).toEqual([
        'mysql://root@127.0.0.1:3307/test',
        'mysql://root@127.0.0.1:3308/test',
        'redis://127.0.0.1:7000',
      ])
    })

    it('reads the cluster nodes from REDIS_CLUSTER_NODES', async () => {
      const server = await resolveServer('redis-cluster', {
        env: { REDIS_CLUSTER_NODES: '10.0.0.1:7100, 10.0.0.2:7101,[::1]:7102' },
        ping: answers,
      })
      expect(server.nodes).toEqual([
        { host: '10.0.0.1', port: 7100 },
        { host: '10.0.0.2', port: 7101 },
        { host: '::1', port: 7102 },
      ])
      expect(server).toMatchObject({ url: 'redis://10.0.0.1:7100', host: '10.0.0.1', port: 7100 })
    })

    it('reads the RabbitMQ cluster from AMQP_CLUSTER_URLS, one URL per node', async () => {
      const server = await resolveServer('amqp-cluster', {
        env: { AMQP_CLUSTER_URLS: 'amqp://u:p@10.0.0.1:5700, amqps://u:p@10.0.0.2,' },
        ping: answers,
      })
      expect(server.urls).toEqual(['amqp://u:p@10.0.0.1:5700', 'amqps://u:p@10.0.0.2'])
      expect(server.nodes).toEqual([
        { host: '10.0.0.1', port: 5700 },
        { host: '10.0.0.2', port: 5671 },
      ])
      expect(server).toMatchObject({ url: 'amqp://u:p@10.0.0.1:5700', source: 'env' })
    })

    it('defaults the RabbitMQ cluster to 127.0.0.1:5681-5683 with guest/guest, started by the topology script', async () => {
      const server = await resolveServer('amqp-cluster', { env: {}, ping: answers })
      expect(server.urls).toEqual([
        'amqp://guest:guest@127.0.0.1:5681',
        'amqp://guest:guest@127.0.0.1:5682',
        'amqp://guest:guest@127.0.0.1:5683',
      ])
      expect(serverStartCommand('amqp-cluster')).toBe(
        'bash scripts/topology.sh start rabbitmq-cluster',
      )
    })

    it('defaults the cluster to 127.0.0.1:7000-7005', async () => {
      const server = await resolveServer('redis-cluster', { env: {}, ping: answers })
      expect(server.nodes.map((n) => `${n.host}:${n.port}`)).toEqual([
        '127.0.0.1:7000',
        '127.0.0.1:7001',
        '127.0.0.1:7002',
        '127.0.0.1:7003',
        '127.0.0.1:7004',
        '127.0.0.1:7005',
      ])
    })

    it('rejects an unknown server name', async () => {
      await expect(resolveServer('postgres' as never, { env: {} })).rejects.toThrow(
        /unknown server "postgres"/,
      )
    })
  })

  describe('when the server does not answer', () => {
    const cases = [
      ['redis', 'REDIS_URL', (port: number) => `redis://127.0.0.1:${port}`],
      ['mysql', 'MYSQL_URL', (port: number) => `mysql://root@127.0.0.1:${port}/test`],
      ['amqp', 'AMQP_URL', (port: number) => `amqp://guest:guest@127.0.0.1:${port}`],
      [
        'mysql-primary',
        'MYSQL_PRIMARY_URL',
        (port: number) => `mysql://root@127.0.0.1:${port}/test`,
      ],
      [
        'mysql-replica',
        'MYSQL_REPLICA_URL',
        (port: number) => `mysql://root@127.0.0.1:${port}/test`,
      ],
      ['redis-cluster', 'REDIS_CLUSTER_NODES', (port: number) => `127.0.0.1:${port}`],
      [
        'amqp-cluster',
        'AMQP_CLUSTER_URLS',
        (port: number) => `amqp://guest:guest@127.0.0.1:${port}`,
      ],
    ] as const

    for (const [name, envVar, address] of cases) {
      it(`${name}: names the server, the address, its origin and the start command`, async () => {
        const port = await closedPort()
        const error = await resolveServer(name, { env: { [envVar]: address(port) } }).catch(
          (e: unknown) => e,
        )
        expect(isServerUnavailableError(error)).toBe(true)
        const message = (error as Error).message
        expect(message).toContain(`${name} did not answer at ${address(port)}`)
        expect(message).toContain(`address from ${envVar}`)
        expect(message).toContain('ECONNREFUSED')
        expect(message).toContain(`Start it with: ${serverStartCommand(name)}`)
        expect(error).toMatchObject({
          server: name,
          source: 'env',
          code: 'E_TESTKIT_SERVER_UNAVAILABLE',
        })
      })
    }

    it('gives the exact commands that start each server', () => {
      expect(serverStartCommand('redis')).toBe(
        'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no',
      )
      expect(serverStartCommand('mysql')).toBe(
        'start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd',
      )
      expect(serverStartCommand('amqp')).toBe('rabbitmq-server -detached')
      expect(serverStartCommand('mysql-primary')).toBe('bash scripts/topology.sh start')
      expect(serverStartCommand('redis-cluster')).toBe('bash scripts/topology.sh start')
    })

    it('says how to point elsewhere when the local default is down', async () => {
      const f = fakes({ local: 'down' })
      const error = await resolveServer('mysql', { ...f, env: {} }).catch((e: unknown) => e)
      expect((error as Error).message).toBe(
        'mysql did not answer at mysql://root@127.0.0.1:3306/test (address from the local default; ' +
          'set MYSQL_URL to use another): connect ECONNREFUSED\n' +
          'Start it with: start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd',
      )
    })

    for (const [name, envVar, address] of cases.slice(0, 3)) {
      it(`${name}: gives up within the bound when a server accepts but never speaks`, async () => {
        const mute = await tcpServer(() => {})
        try {
          const started = Date.now()
          const error = await resolveServer(name, {
            env: { [envVar]: address(mute.port) },
            timeoutMs: 300,
          }).catch((e: unknown) => e)
          expect(Date.now() - started).toBeLessThan(2000)
          expect(error).toBeInstanceOf(ServerUnavailableError)
          expect((error as Error).message).toMatch(/no answer within 300 ms|timeout|timed out/i)
        } finally {
          await mute.close()
        }
      })
    }
  })
})

describe('parseNodeList', () => {
  it('accepts host:port and redis:// entries and skips blanks', () => {
    expect(parseNodeList('a:1,,redis://b:2, c')).toEqual([
      { host: 'a', port: 1 },
      { host: 'b', port: 2 },
      { host: 'c', port: 6379 },
    ])
  })

  it('rejects an empty list', () => {
    expect(() => parseNodeList(' , ')).toThrow(/expected host:port/)
  })
})

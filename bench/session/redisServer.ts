/**
 * A private, throwaway redis-server on 127.0.0.1 for the session benchmarks: its command
 * statistics count only the benchmark's own traffic, which the shared server cannot give.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { Redis } from 'ioredis'

export interface PrivateRedis {
  port: number
  /** `INFO commandstats` as command -> calls. */
  commandStats(): Promise<Map<string, number>>
  /** CPU time the server has used, in microseconds (user + system). */
  cpuMicros(): Promise<number>
  close(): Promise<void>
}

async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

export async function startPrivateRedis(): Promise<PrivateRedis> {
  const port = await freePort()
  const child: ChildProcess = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  )
  const spawnError = new Promise<never>((_, reject) =>
    child.once('error', (e) =>
      reject(new Error(`redis-server could not start (is it installed?): ${e.message}`)),
    ),
  )
  const admin = new Redis({ port, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => 50 })
  admin.on('error', () => {})
  const deadline = Date.now() + 10_000
  for (;;) {
    try {
      await Promise.race([admin.connect(), spawnError])
      await admin.ping()
      break
    } catch (error) {
      if (Date.now() > deadline) throw error
      admin.disconnect()
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
  return {
    port,
    async commandStats() {
      const text = await admin.info('commandstats')
      const out = new Map<string, number>()
      for (const m of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out.set(m[1]!, Number(m[2]))
      return out
    },
    async cpuMicros() {
      const text = await admin.info('cpu')
      const user = Number(/used_cpu_user:([\d.]+)/.exec(text)?.[1] ?? 0)
      const sys = Number(/used_cpu_sys:([\d.]+)/.exec(text)?.[1] ?? 0)
      return (user + sys) * 1e6
    },
    async close() {
      admin.disconnect()
      child.kill('SIGTERM')
      await new Promise((resolve) => child.once('exit', resolve))
    },
  }
}

/**
 * Fault proxies that add network latency in front of the shard servers, in a child process of
 * their own so that their timers and copies do not run on the benchmark's event loop. Used by
 * scatter.bench.ts to emulate shards on separate hosts: this machine cannot delay loopback
 * traffic in the kernel (no netem), and all servers share its 2 cores.
 */
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { createFaultProxy, type FaultProxy } from '@ballast/testkit'

/** Starts one proxy per URL, each adding `latencyMs` per direction; returns the proxied URLs. */
export async function startLatencyProxies(
  urls: string[],
  latencyMs: number,
): Promise<{ urls: string[]; stop(): Promise<void> }> {
  const targets = urls.map((u) => {
    const url = new URL(u)
    return { host: url.hostname, port: Number(url.port) }
  })
  const child = fork(fileURLToPath(import.meta.url), [], {
    execArgv: process.execArgv,
    env: { ...process.env, LATENCY_PROXY_SPEC: JSON.stringify({ targets, latencyMs }) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const ports = await new Promise<number[]>((resolve, reject) => {
    child.once('message', (m) => resolve(m as number[]))
    child.once('exit', (code) => reject(new Error(`latency proxies exited with ${code}`)))
  })
  return {
    urls: urls.map((u, i) => {
      const url = new URL(u)
      url.hostname = '127.0.0.1'
      url.port = String(ports[i])
      return url.toString()
    }),
    stop: async () => {
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.send('stop')
      await exited
    },
  }
}

if (process.env.LATENCY_PROXY_SPEC !== undefined && process.send !== undefined) {
  const { targets, latencyMs } = JSON.parse(process.env.LATENCY_PROXY_SPEC) as {
    targets: { host: string; port: number }[]
    latencyMs: number
  }
  const proxies: FaultProxy[] = []
  for (const t of targets) proxies.push(await createFaultProxy({ ...t, latencyMs }))
  process.send(proxies.map((p) => p.port))
  process.on('message', async () => {
    await Promise.all(proxies.map((p) => p.close()))
    process.exit(0)
  })
  process.on('disconnect', () => process.exit(0))
}

import { type ChildProcess, fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { CacheGroup, type Topology } from './fixtures.js'

const WORKER = fileURLToPath(new URL('./processWorker.ts', import.meta.url))

interface Worker {
  child: ChildProcess
  next(predicate: (message: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>
  messages: Record<string, unknown>[]
}

function start(topology: Topology, group: CacheGroup): Promise<Worker> {
  const child = fork(WORKER, [topology, group.namespace, group.prefix], {
    execArgv: ['--import', 'tsx', '--conditions=@ballast/source'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const messages: Record<string, unknown>[] = []
  interface Waiter {
    predicate: (m: Record<string, unknown>) => boolean
    resolve: (m: Record<string, unknown>) => void
    reject: (error: Error) => void
  }
  const waiters: Waiter[] = []
  let exited: Error | undefined
  child.on('message', (message: Record<string, unknown>) => {
    messages.push(message)
    const i = waiters.findIndex((w) => w.predicate(message))
    if (i !== -1) waiters.splice(i, 1)[0]?.resolve(message)
  })
  // one listener for every wait (one per wait piled up past Node's listener limit)
  child.once('exit', (code) => {
    exited = new Error(`worker exited with ${code}`)
    for (const w of waiters.splice(0)) w.reject(exited)
  })
  const worker: Worker = {
    child,
    messages,
    next: (predicate) =>
      new Promise((resolve, reject) => {
        if (exited !== undefined) reject(exited)
        else waiters.push({ predicate, resolve, reject })
      }),
  }
  return worker.next((m) => m.ready === true).then(() => worker)
}

describe.each<Topology>(['standalone', 'cluster'])(
  'caches in separate processes on Redis %s',
  (topology) => {
    let group: CacheGroup
    let workers: Worker[] = []
    afterEach(async () => {
      await Promise.all(
        workers.map(
          (w) =>
            new Promise<void>((resolve) => {
              w.child.once('exit', () => resolve())
              w.child.send({ cmd: 'close' })
            }),
        ),
      )
      workers = []
      await group.close()
    })

    it('1,000 concurrent getOrSet of one cold key across 4 processes with the lock call the loader once', async () => {
      group = new CacheGroup(topology)
      workers = await Promise.all(Array.from({ length: 4 }, () => start(topology, group)))
      const counter = `${group.prefix}:calls`
      const done = workers.map((w) => w.next((m) => m.done === 'lock'))
      for (const w of workers) w.child.send({ cmd: 'lock', key: 'cold', n: 250, counter })
      const results = await Promise.all(done)
      for (const result of results) expect(result.values).toEqual(['value of cold'])
      const raw = await group.raw()
      expect(await raw.get(counter)).toBe('1')
    })

    it('an update in one process is never served stale by the others once its invalidation is delivered', async () => {
      group = new CacheGroup(topology)
      workers = await Promise.all(Array.from({ length: 3 }, () => start(topology, group)))
      await Promise.all(
        workers.map((w) => {
          const ready = w.next((m) => m.done === 'watch')
          w.child.send({ cmd: 'watch', key: 'stock' })
          return ready
        }),
      )
      const writer = await group.add()
      for (let v = 1; v <= 30; v++) {
        const seen = workers.map((w) => w.next((m) => 'seen' in m))
        await writer.set('stock', v)
        for (const message of await Promise.all(seen)) expect(message.seen).toBe(v)
      }
    })
  },
)

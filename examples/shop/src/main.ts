/**
 * The shop's command line:
 *   start               start everything in the foreground; Ctrl-C stops it all
 *   stop                stop a running shop and any leftover process (pid files in the run dir)
 *   chaos FAULT on|off  inject or restore a fault: catalog-instance, redis, replica, rabbitmq,
 *                       rabbitmq-node, redis-failover, shard-primary, payment-provider
 *   status              processes, faults and queue depths
 * Environment: SHOP_PORT (gateway port, default 8080), SHOP_NS (default "shop"),
 * SHOP_RUN_DIR (default examples/shop/.run), SHOP_PRODUCTS, SHOP_USERS, SHOP_REDIS_CLUSTER
 * (shared: sessions on the topology's cluster), SHOP_SHARD_PAIR (private: shard b on a MariaDB
 * pair of the shop's own, fresh data in namespace "shop_pair" unless SHOP_NS says otherwise).
 */
import { existsSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { SHOP_DIR } from './config.js'
import { controlHeaders } from './control.js'
import { isShopPrometheus, prometheusPidFile } from './platform/prometheus.js'
import { CHAOS_FAULTS, type ChaosFault } from './services/gateway.js'
import { startShop } from './supervisor.js'

const port = Number(process.env.SHOP_PORT ?? 8080)
// A shard pair of the shop's own starts empty each time: its shop starts from fresh data, in a
// namespace of its own so the usual shop's data is never dropped.
const privatePair = process.env.SHOP_SHARD_PAIR === 'private'
const ns = process.env.SHOP_NS ?? (privatePair ? 'shop_pair' : 'shop')
const runDir = process.env.SHOP_RUN_DIR ?? join(SHOP_DIR, '.run')
const [command = 'start', ...args] = process.argv.slice(2)

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

function isShopProcess(pid: number): boolean {
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8')
    return cmd.includes('src/main.ts') || cmd.includes('src/service.ts')
  } catch {
    return alive(pid)
  }
}

async function stop(): Promise<void> {
  const pidFile = join(runDir, 'shop.pid')
  const childrenFile = join(runDir, 'children.json')
  let stopped = 0
  if (existsSync(pidFile)) {
    const pid = Number(readFileSync(pidFile, 'utf8').trim())
    if (pid && alive(pid) && isShopProcess(pid)) {
      process.kill(pid, 'SIGTERM')
      for (let i = 0; i < 100 && alive(pid); i++) await new Promise((r) => setTimeout(r, 100))
      stopped++
    }
  }
  if (existsSync(childrenFile)) {
    const list = JSON.parse(readFileSync(childrenFile, 'utf8')) as { name: string; pid: number }[]
    for (const c of list) {
      if (c.pid && alive(c.pid) && isShopProcess(c.pid)) {
        process.kill(c.pid, 'SIGTERM')
        stopped++
      }
    }
    await new Promise((r) => setTimeout(r, 1000))
    for (const c of list)
      if (c.pid && alive(c.pid) && isShopProcess(c.pid)) process.kill(c.pid, 'SIGKILL')
  }
  // A Prometheus left by a supervisor that could not stop it (killed with SIGKILL).
  const promPidFile = prometheusPidFile(runDir)
  if (existsSync(promPidFile)) {
    const pid = Number(readFileSync(promPidFile, 'utf8').trim())
    if (pid && alive(pid) && isShopPrometheus(pid, runDir)) {
      process.kill(pid, 'SIGTERM')
      for (let i = 0; i < 50 && alive(pid); i++) await new Promise((r) => setTimeout(r, 100))
      stopped++
    }
    rmSync(promPidFile, { force: true })
  }
  rmSync(pidFile, { force: true })
  rmSync(childrenFile, { force: true })
  process.stdout.write(
    stopped ? `shop: stopped ${stopped} process(es)\n` : 'shop: nothing was running\n',
  )
}

async function control(path: string, body?: unknown): Promise<unknown> {
  const res = await fetch(`http://127.0.0.1:${port + 1}${path}`, {
    method: body ? 'POST' : 'GET',
    headers: controlHeaders(runDir),
    body: body ? JSON.stringify(body) : undefined,
  })
  return res.json()
}

if (command === 'stop') {
  await stop()
} else if (command === 'chaos') {
  const [fault, state = 'on'] = args
  if (!(CHAOS_FAULTS as readonly string[]).includes(fault ?? '')) {
    process.stderr.write(`usage: chaos ${CHAOS_FAULTS.join('|')} on|off\n`)
    process.exit(2)
  }
  process.stdout.write(
    `${JSON.stringify(await control('/chaos', { fault: fault as ChaosFault, on: state === 'on' }))}\n`,
  )
} else if (command === 'status') {
  process.stdout.write(`${JSON.stringify(await control('/status'), null, 2)}\n`)
} else if (command === 'start') {
  const pidFile = join(runDir, 'shop.pid')
  if (existsSync(pidFile)) {
    const pid = Number(readFileSync(pidFile, 'utf8').trim())
    if (pid && alive(pid) && isShopProcess(pid)) {
      process.stderr.write(
        `shop: already running (pid ${pid}); stop it with scripts/shop-stop.sh\n`,
      )
      process.exit(1)
    }
  }
  const shop = await startShop({
    basePort: port,
    ns,
    runDir,
    seedProducts: Number(process.env.SHOP_PRODUCTS ?? 3000),
    seedUsers: Number(process.env.SHOP_USERS ?? 300),
    bench: process.env.SHOP_BENCH === '1',
    // SHOP_REDIS_CLUSTER=shared: sessions on the topology's cluster (7000-7005) instead of the shop's own
    redisCluster: process.env.SHOP_REDIS_CLUSTER === 'shared' ? 'shared' : 'private',
    // SHOP_SHARD_PAIR=private: shard b on a MariaDB pair of the shop's own (the shard-primary fault)
    shardPair: privatePair ? 'private' : 'standard',
    freshData: privatePair,
    echo: true,
  })
  process.stdout.write(
    `\nshop: ready at ${shop.url}\n` +
      `shop: admin login admin@shop.example / ${shop.secrets.adminPassword} (from ${join(runDir, 'secrets.json')}, git-ignored)\n` +
      `shop: seeded customers user1..user${process.env.SHOP_USERS ?? 300}@shop.example / ${shop.secrets.seedPassword}\n` +
      'shop: Ctrl-C stops everything\n',
  )
  let done = false
  const quit = async () => {
    if (done) return
    done = true
    process.stdout.write('\nshop: stopping...\n')
    await shop.stop()
    process.stdout.write('shop: stopped\n')
    process.exit(0)
  }
  process.on('SIGINT', () => void quit())
  process.on('SIGTERM', () => void quit())
} else {
  process.stderr.write(`unknown command ${command}: start | stop | chaos FAULT on|off | status\n`)
  process.exit(2)
}

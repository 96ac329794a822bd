/**
 * The entry point of one service instance (a child of the supervisor): reads its name from
 * `SHOP_INSTANCE` and the configuration from `SHOP_CONFIG`, starts, and stops cleanly on
 * SIGTERM or when the supervisor goes away (its IPC channel closes).
 */
import { loadConfig } from './config.js'
import { loadOrCreateControlToken } from './control.js'
import { installShopMetrics } from './platform/metrics.js'
import { installShopTracing } from './platform/tracing.js'
import { startAccount } from './services/account.js'
import { startCart } from './services/cart.js'
import { startCatalog } from './services/catalog.js'
import { startGateway } from './services/gateway.js'
import { startOrder } from './services/order.js'
import { startProvider } from './services/provider.js'
import { startWorker } from './services/workers.js'

const config = loadConfig()
const name = process.env.SHOP_INSTANCE ?? ''
const spec = config.instances.find((i) => i.name === name)
if (!spec) throw new Error(`unknown instance ${JSON.stringify(name)}`)

// Metrics first: the ballast components take the global MeterProvider when they are created.
const meters = await installShopMetrics(spec)
// Traces too: the global TracerProvider, context manager and W3C propagator.
const tracing = installShopTracing(config, spec.service, spec.name)

async function start() {
  const s = spec as NonNullable<typeof spec>
  switch (s.service) {
    case 'gateway':
      return startGateway(config, s.name, s.port)
    case 'account':
      return startAccount(config, s.name, s.port)
    case 'catalog':
      return startCatalog(config, s.name, s.port)
    case 'cart':
      return startCart(config, s.name, s.port)
    case 'order':
      return startOrder(config, s.name, s.port)
    case 'provider':
      return startProvider(s.port, loadOrCreateControlToken(config.runDir))
    case 'inventory':
    case 'payment':
    case 'delivery':
      return startWorker(config, s.service, s.name, s.port)
  }
}

const running = await start()
process.send?.({ type: 'ready', name })

let stopping = false
async function stop(code: number) {
  if (stopping) return
  stopping = true
  const force = setTimeout(() => process.exit(code), 4000)
  force.unref()
  running.server.closeIdleConnections?.()
  await new Promise<void>((r) => running.server.close(() => r()))
  await running.close().catch(() => {})
  await meters.shutdown()
  await tracing.shutdown()
  process.exit(code)
}
process.on('SIGTERM', () => void stop(0))
process.on('SIGINT', () => void stop(0))
process.on('disconnect', () => void stop(0))

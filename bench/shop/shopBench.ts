/** Starts a shop of its own for a benchmark (unique namespace, dropped afterwards). */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { amqpClusterUrls, redisUrl } from '@ballast/testkit'
import { dropKeysAndQueues } from '../../examples/shop/src/data/cleanup.js'
import {
  findFreeBasePort,
  type Shop,
  type ShopOptions,
  startShop,
} from '../../examples/shop/src/supervisor.js'

export async function benchShop(
  label: string,
  options: Partial<ShopOptions> = {},
): Promise<Shop & { close(): Promise<void> }> {
  const ns = `bench_${label}_${process.pid}`
  const runDir = mkdtempSync(join(tmpdir(), `${ns}-`))
  const shop = await startShop({
    basePort: await findFreeBasePort(),
    ns,
    runDir,
    seedProducts: 500,
    seedUsers: 40,
    stock: 10_000_000,
    bench: true,
    onLog: () => {},
    ...options,
  })
  return Object.assign(shop, {
    async close() {
      await shop.stop({ dropData: true })
      await dropKeysAndQueues(shop.config, await redisUrl(), await amqpClusterUrls())
      rmSync(runDir, { recursive: true, force: true })
    },
  })
}

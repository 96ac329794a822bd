/** Starts one shop for every test file (starting a dozen Node processes costs ~20 s) and stops it after. */
import type { TestProject } from 'vitest/node'
import type { ShopConfig } from '../src/config.js'
import type { Secrets } from '../src/secrets.js'
import { startTestShop } from './fixture.js'

declare module 'vitest' {
  export interface ProvidedContext {
    shop: { config: ShopConfig; secrets: Secrets; url: string }
  }
}

export default async function setup(project: TestProject) {
  const shop = await startTestShop('shop_test', {
    products: 300,
    users: 20,
    stock: 10_000,
    // Low overload limits so a small, bounded load shows the catalog shedding features.
    degrader: { maxInFlight: 6, maxEventLoopDelay: 250, interval: 200 },
  })
  project.provide('shop', { config: shop.config, secrets: shop.secrets, url: shop.url })
  return async () => {
    await shop.close()
  }
}

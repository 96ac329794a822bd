import { fileURLToPath } from 'node:url'
import { defineProject } from 'vitest/config'

const globalSetup = fileURLToPath(new URL('./vitest.global-setup.ts', import.meta.url))

/**
 * The vitest project every package and tool uses: tests import workspace packages from
 * their `src` through the `@ballast/source` export condition, so no build is needed.
 */
export function ballastProject(name: string) {
  return defineProject({
    resolve: { conditions: ['@ballast/source'] },
    ssr: { resolve: { conditions: ['@ballast/source'] } },
    test: {
      name,
      globalSetup: [globalSetup],
      include: ['test/**/*.test.ts'],
      testTimeout: 30_000,
      hookTimeout: 60_000,
      environment: 'node',
    },
  })
}

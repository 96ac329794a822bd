import { resolveServer, type ServerName, serverEnvVar } from './servers.js'

/**
 * Resolves servers once and writes their addresses into `env` (`REDIS_URL`, `MYSQL_URL`,
 * `AMQP_URL`, ...), so processes started afterwards take them from the environment. Meant
 * for a vitest `globalSetup`: with testcontainers, every test worker then shares one
 * container per server instead of starting its own.
 *
 * @example
 * ```ts
 * // vitest.global-setup.ts
 * export default () => exportServerUrls()
 * ```
 */
export async function exportServerUrls(
  names: readonly ServerName[] = ['redis', 'mysql', 'amqp'],
  env: Record<string, string | undefined> = process.env,
): Promise<Record<string, string>> {
  const exported: Record<string, string> = {}
  for (const server of await Promise.all(names.map((name) => resolveServer(name)))) {
    const value =
      server.name === 'redis-cluster'
        ? server.nodes.map((node) => `${node.host}:${node.port}`).join(',')
        : server.urls.join(',')
    exported[serverEnvVar(server.name)] = value
    env[serverEnvVar(server.name)] = value
  }
  return exported
}

import { containerRuntimeAnswers, exportServerUrls } from '@ballast/testkit'

/**
 * Runs once in vitest's main process. Where a container runtime answers and no URL is set,
 * testcontainers starts each standard server here, once, and the URLs go into the
 * environment that every test worker inherits; otherwise each worker resolves its servers
 * itself (environment URL, else the local defaults).
 */
export default async function setup() {
  if (process.env.REDIS_URL && process.env.MYSQL_URL && process.env.AMQP_URL) return
  if (await containerRuntimeAnswers()) await exportServerUrls()
}

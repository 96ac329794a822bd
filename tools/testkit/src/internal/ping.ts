import { bounded } from './bounded.js'

/** Sends a Redis PING to `url` and expects PONG. */
export function pingRedis(url: string, timeoutMs: number): Promise<void> {
  return bounded(timeoutMs, async (onAbort) => {
    const { Redis } = await import('ioredis')
    const client = new Redis(url, {
      lazyConnect: true,
      connectTimeout: timeoutMs,
      commandTimeout: timeoutMs,
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      enableReadyCheck: false,
      retryStrategy: () => null,
    })
    // ioredis rejects connect() with a bare "Connection is closed"; the socket error says why
    let lastError: Error | undefined
    client.on('error', (error: Error) => {
      lastError = error
    })
    onAbort(() => client.disconnect())
    try {
      await client.connect()
      const reply = await client.ping()
      if (reply !== 'PONG') throw new Error(`PING answered ${JSON.stringify(reply)}`)
    } catch (error) {
      throw lastError ?? error
    } finally {
      client.disconnect()
    }
  })
}

/** Runs `SELECT 1` on the MySQL/MariaDB server at `url`. */
export function pingMysql(url: string, timeoutMs: number): Promise<void> {
  return bounded(timeoutMs, async (onAbort) => {
    const mysql = (await import('mysql2/promise')).default
    let aborted = false
    onAbort(() => {
      aborted = true
    })
    const connection = await mysql.createConnection({ uri: url, connectTimeout: timeoutMs })
    if (aborted) {
      connection.destroy()
      return
    }
    onAbort(() => connection.destroy())
    try {
      await connection.query('SELECT 1')
    } finally {
      connection.destroy()
    }
  })
}

/** Opens (and closes) an AMQP connection to `url`. */
export function pingAmqp(url: string, timeoutMs: number): Promise<void> {
  return bounded(timeoutMs, async (onAbort) => {
    const amqp = (await import('amqplib')).default
    let aborted = false
    onAbort(() => {
      aborted = true
    })
    const connection = await amqp.connect(url, { timeout: timeoutMs })
    connection.on('error', () => {
      // a ping only needs the handshake to succeed
    })
    if (aborted) {
      void connection.close().catch(() => {})
      return
    }
    await connection.close()
  })
}

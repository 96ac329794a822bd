// A relay process that publishes one batch and then hangs before marking it sent, so the
// parent can SIGKILL it between publish and mark-sent.
import mysql from 'mysql2/promise'
import { createBroker, createOutbox, createOutboxRelay, type SqlPool } from '../../src/index.js'

const [amqpUrl, mysqlUrl, table] = process.argv.slice(2) as [string, string, string]
const pool = mysql.createPool({ uri: mysqlUrl, connectionLimit: 2 })
const hanging: SqlPool = {
  async getConnection() {
    const connection = await pool.getConnection()
    return new Proxy(connection, {
      get(target, key, receiver) {
        if (key === 'query') {
          return (sql: string, values?: unknown[]) => {
            if (/SET sent_at/.test(sql)) {
              process.stdout.write('published\n')
              return new Promise(() => {})
            }
            return target.query(sql, values)
          }
        }
        const value = Reflect.get(target, key, receiver)
        return typeof value === 'function' ? value.bind(target) : value
      },
    }) as never
  },
}
const broker = createBroker({ urls: amqpUrl })
createOutboxRelay({ pool: hanging, broker, outbox: createOutbox({ table }) })

/**
 * Creates the shop's databases, tables and seed data, idempotently: products in their own
 * database, and users, carts and orders in every shard. SQL goes only through placeholders.
 */
import mysql from 'mysql2/promise'
import type { MysqlTarget, ShardSpec, ShopConfig } from '../config.js'
import { outbox } from '../platform/outbox.js'
import { initializeShopSlotMap, openShopRouter } from '../platform/sharding.js'
import { hashPassword } from '../web/password.js'
import { newUserId } from './ids.js'

const CATALOG_TABLES = [
  `CREATE TABLE IF NOT EXISTS products (
    id INT PRIMARY KEY AUTO_INCREMENT,
    sku VARCHAR(32) NOT NULL UNIQUE,
    name VARCHAR(200) NOT NULL,
    description TEXT NOT NULL,
    category VARCHAR(64) NOT NULL,
    price_cents INT NOT NULL,
    stock INT NOT NULL,
    updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    INDEX (name), INDEX (category)
  ) ENGINE=InnoDB`,
  `CREATE TABLE IF NOT EXISTS reviews (
    id INT PRIMARY KEY AUTO_INCREMENT,
    product_id INT NOT NULL,
    author VARCHAR(64) NOT NULL,
    rating TINYINT NOT NULL,
    body VARCHAR(500) NOT NULL,
    INDEX (product_id)
  ) ENGINE=InnoDB`,
  // Inventory's idempotent consumer: a stock move and its message id commit together.
  `CREATE TABLE IF NOT EXISTS stock_moves (
    message_id VARCHAR(96) PRIMARY KEY,
    order_id VARCHAR(40) NOT NULL,
    outcome VARCHAR(16) NOT NULL,
    created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
  ) ENGINE=InnoDB`,
]

const SHARD_TABLES = [
  `CREATE TABLE IF NOT EXISTS users (
    id VARCHAR(24) PRIMARY KEY,
    email VARCHAR(254) NOT NULL,
    name VARCHAR(100) NOT NULL,
    password_hash VARCHAR(200) NOT NULL,
    is_admin TINYINT NOT NULL DEFAULT 0,
    created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
  ) ENGINE=InnoDB`,
  // Login looks users up by email: this index is sharded by the email itself.
  `CREATE TABLE IF NOT EXISTS email_index (
    email VARCHAR(254) PRIMARY KEY,
    user_id VARCHAR(24) NOT NULL
  ) ENGINE=InnoDB`,
  `CREATE TABLE IF NOT EXISTS cart_items (
    user_id VARCHAR(24) NOT NULL,
    product_id INT NOT NULL,
    qty INT NOT NULL,
    PRIMARY KEY (user_id, product_id)
  ) ENGINE=InnoDB`,
  `CREATE TABLE IF NOT EXISTS orders (
    id VARCHAR(40) PRIMARY KEY,
    user_id VARCHAR(24) NOT NULL,
    idem_key VARCHAR(64) NOT NULL,
    status VARCHAR(20) NOT NULL,
    total_cents INT NOT NULL,
    created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    UNIQUE KEY (user_id, idem_key),
    INDEX (user_id, created_at)
  ) ENGINE=InnoDB`,
  // The order tables carry the user id: the slot mover reads each row's slot from it (see
  // MOVED_TABLES in platform/sharding.ts).
  `CREATE TABLE IF NOT EXISTS order_items (
    order_id VARCHAR(40) NOT NULL,
    user_id VARCHAR(24) NOT NULL,
    product_id INT NOT NULL,
    name VARCHAR(200) NOT NULL,
    price_cents INT NOT NULL,
    qty INT NOT NULL,
    PRIMARY KEY (order_id, product_id)
  ) ENGINE=InnoDB`,
  // The key is (order_id, id): ids are counted per shard, so two shards' rows moved onto a
  // third never collide (the order id is unique everywhere, and an order's rows live together).
  `CREATE TABLE IF NOT EXISTS order_events (
    id BIGINT NOT NULL AUTO_INCREMENT,
    order_id VARCHAR(40) NOT NULL,
    user_id VARCHAR(24) NOT NULL,
    status VARCHAR(20) NOT NULL,
    note VARCHAR(200) NOT NULL DEFAULT '',
    at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (order_id, id),
    INDEX (id)
  ) ENGINE=InnoDB`,
  `CREATE TABLE IF NOT EXISTS payments (
    order_id VARCHAR(40) PRIMARY KEY,
    user_id VARCHAR(24) NOT NULL,
    idem_key VARCHAR(80) NOT NULL,
    amount_cents INT NOT NULL,
    provider_ref VARCHAR(64) NOT NULL,
    created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
  ) ENGINE=InnoDB`,
]

/**
 * Shards made before the order tables carried the user id (and before order events were keyed
 * by order): the column is added and filled from the orders, and the key changed, once.
 */
async function migrateShard(conn: mysql.Connection, database: string): Promise<void> {
  const [columns] = await conn.query<mysql.RowDataPacket[]>(
    "SELECT table_name AS t FROM information_schema.columns WHERE table_schema = ? AND column_name = 'user_id' AND table_name IN ('order_items', 'order_events', 'payments')",
    [database],
  )
  const has = new Set(columns.map((c) => String(c.t)))
  for (const table of ['order_items', 'order_events', 'payments']) {
    if (has.has(table)) continue
    await conn.query(
      `ALTER TABLE \`${table}\` ADD COLUMN user_id VARCHAR(24) NOT NULL DEFAULT '' AFTER order_id`,
    )
    await conn.query(
      `UPDATE \`${table}\` t JOIN orders o ON o.id = t.order_id SET t.user_id = o.user_id`,
    )
    await conn.query(`ALTER TABLE \`${table}\` ALTER COLUMN user_id DROP DEFAULT`)
  }
  const [key] = await conn.query<mysql.RowDataPacket[]>(
    "SELECT GROUP_CONCAT(column_name ORDER BY seq_in_index) AS cols FROM information_schema.statistics WHERE table_schema = ? AND table_name = 'order_events' AND index_name = 'PRIMARY'",
    [database],
  )
  if (String(key[0]?.cols ?? '') === 'id') {
    await conn.query(
      'ALTER TABLE order_events ADD INDEX (id), DROP PRIMARY KEY, ADD PRIMARY KEY (order_id, id)',
    )
  }
}

async function connectServer(t: MysqlTarget) {
  return mysql.createConnection({
    host: t.host,
    port: t.port,
    user: t.user,
    password: t.password,
    multipleStatements: false,
  })
}

async function ensureDatabase(t: MysqlTarget, tables: string[]): Promise<void> {
  const conn = await connectServer(t)
  try {
    // Identifiers cannot be placeholders; the name is checked to be a plain identifier.
    if (!/^[A-Za-z0-9_]+$/.test(t.database)) throw new Error(`unsafe database name ${t.database}`)
    await conn.query(`CREATE DATABASE IF NOT EXISTS \`${t.database}\``)
    await conn.query(`USE \`${t.database}\``)
    for (const sql of tables) await conn.query(sql)
    // The transactional outbox (written in the order's transaction, published by the relay):
    // @ballast/mq's table layout.
    if (tables === SHARD_TABLES) {
      await outbox.createTable(conn)
      await migrateShard(conn, t.database)
    }
  } finally {
    await conn.end()
  }
}

/**
 * Shops started before the swap to `@ballast/sharding` placed users with a different hash (and
 * had their own `outbox` table): their rows would not be found. Refuse them with what to do.
 */
async function refuseOldLayout(t: MysqlTarget): Promise<void> {
  const conn = await connectServer(t)
  try {
    const [rows] = await conn.query<mysql.RowDataPacket[]>(
      'SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = ? AND table_name = ?',
      [t.database, 'outbox'],
    )
    if (Number(rows[0]?.n ?? 0) > 0) {
      throw new Error(
        `database ${t.database} holds a shop from before it used @ballast/sharding (users placed by another hash): stop it and drop its databases (<ns>_catalog, <ns>_shard_a, <ns>_shard_b), or start with another SHOP_NS`,
      )
    }
  } finally {
    await conn.end()
  }
}

export async function dropDatabases(catalog: MysqlTarget, shards: ShardSpec[]): Promise<void> {
  for (const t of [catalog, ...shards.map((s) => s.primary)]) {
    if (!/^[A-Za-z0-9_]+$/.test(t.database)) continue
    const conn = await connectServer(t)
    try {
      await conn.query(`DROP DATABASE IF EXISTS \`${t.database}\``)
    } finally {
      await conn.end()
    }
  }
}

const ADJECTIVES = [
  'Sturdy',
  'Quiet',
  'Bright',
  'Compact',
  'Classic',
  'Rugged',
  'Smart',
  'Soft',
  'Swift',
  'Vintage',
  'Modern',
  'Cozy',
  'Bold',
  'Handmade',
  'Portable',
  'Solar',
  'Ceramic',
  'Wooden',
  'Steel',
  'Woolen',
]
const NOUNS = [
  'Kettle',
  'Lamp',
  'Chair',
  'Backpack',
  'Headphones',
  'Notebook',
  'Mug',
  'Blanket',
  'Bicycle Bell',
  'Desk',
  'Teapot',
  'Umbrella',
  'Jacket',
  'Speaker',
  'Watch',
  'Pan',
  'Tent',
  'Pillow',
  'Keyboard',
  'Scarf',
]
const COLOURS = ['Red', 'Blue', 'Green', 'Black', 'White', 'Amber', 'Teal', 'Grey']
const CATEGORIES = ['home', 'outdoor', 'office', 'kitchen', 'audio', 'apparel']

/** A small deterministic PRNG so seed data is the same on every machine. */
function prng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export interface SeedOptions {
  products: number
  users: number
  /** Stock of every product at seed time. */
  stock: number
  adminPassword: string
  seedPassword: string
}

export interface SeedReport {
  products: number
  users: number
  seeded: boolean
}

/**
 * Creates every database and table (shard c's too, which owns no slot until resharded), the
 * slot map (the first time: the ring's placement of shards a and b), and the seed data.
 */
export async function createSchemaAndSeed(
  config: Pick<ShopConfig, 'catalogDb' | 'shards' | 'slotMapDb'>,
  opts: SeedOptions,
): Promise<SeedReport> {
  const { catalogDb: catalog, shards } = config
  await ensureDatabase(catalog, CATALOG_TABLES)
  for (const s of shards) {
    await refuseOldLayout(s.primary)
    await ensureDatabase(s.primary, SHARD_TABLES)
  }
  await initializeShopSlotMap(config.slotMapDb)

  const cat = await mysql.createConnection({ ...catalog, multipleStatements: false })
  let products = 0
  let seeded = false
  try {
    const [rows] = await cat.query<mysql.RowDataPacket[]>('SELECT COUNT(*) AS n FROM products')
    products = Number(rows[0]?.n ?? 0)
    if (products === 0) {
      seeded = true
      const rnd = prng(42)
      const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T
      const batch: unknown[][] = []
      const flush = async () => {
        if (batch.length === 0) return
        await cat.query(
          'INSERT INTO products (sku, name, description, category, price_cents, stock) VALUES ?',
          [batch],
        )
        batch.length = 0
      }
      for (let i = 1; i <= opts.products; i++) {
        const name = `${pick(ADJECTIVES)} ${pick(COLOURS)} ${pick(NOUNS)} ${i}`
        batch.push([
          `SKU-${String(i).padStart(6, '0')}`,
          name,
          `A ${name.toLowerCase()} that does what it says. Seed item ${i}.`,
          pick(CATEGORIES),
          500 + Math.floor(rnd() * 20000),
          opts.stock,
        ])
        if (batch.length === 500) await flush()
      }
      await flush()
      await cat.query(
        `INSERT INTO reviews (product_id, author, rating, body)
         SELECT id, 'Ada', 3 + (id % 3), CONCAT('Does the job. Would buy ', name, ' again.') FROM products`,
      )
      products = opts.products
    }
  } finally {
    await cat.end()
  }

  // Placement is the slot map's: the seed puts rows where services look.
  const routing = await openShopRouter(config, { healthCheckIntervalMs: 0, connectionLimit: 1 })
  const router = routing.router
  const conns = new Map<string, mysql.Connection>()
  for (const s of shards) conns.set(s.id, await mysql.createConnection({ ...s.primary }))
  let users = 0
  try {
    for (const c of conns.values()) {
      const [rows] = await c.query<mysql.RowDataPacket[]>('SELECT COUNT(*) AS n FROM users')
      users += Number(rows[0]?.n ?? 0)
    }
    if (users === 0) {
      seeded = true
      // One scrypt hash for all seeded customers keeps the first start quick; real sign-ups
      // each get their own salt.
      const customerHash = await hashPassword(opts.seedPassword)
      const adminHash = await hashPassword(opts.adminPassword)
      const people: { email: string; name: string; hash: string; admin: number }[] = [
        { email: 'admin@shop.example', name: 'Admin', hash: adminHash, admin: 1 },
      ]
      for (let i = 1; i <= opts.users; i++) {
        people.push({
          email: `user${i}@shop.example`,
          name: `Customer ${i}`,
          hash: customerHash,
          admin: 0,
        })
      }
      const usersBy = new Map<string, unknown[][]>()
      const emailsBy = new Map<string, unknown[][]>()
      for (const p of people) {
        const id = newUserId()
        const us = router.shardFor(id)
        const es = router.shardFor(p.email)
        usersBy.set(us, [...(usersBy.get(us) ?? []), [id, p.email, p.name, p.hash, p.admin]])
        emailsBy.set(es, [...(emailsBy.get(es) ?? []), [p.email, id]])
      }
      for (const [shard, rows] of usersBy) {
        await conns
          .get(shard)
          ?.query('INSERT INTO users (id, email, name, password_hash, is_admin) VALUES ?', [rows])
      }
      for (const [shard, rows] of emailsBy) {
        await conns.get(shard)?.query('INSERT INTO email_index (email, user_id) VALUES ?', [rows])
      }
      users = people.length
    }
  } finally {
    for (const c of conns.values()) await c.end()
    await routing.close()
  }
  return { products, users, seeded }
}

/** Product queries on the catalog database (placeholders only), and the cached reads. */
import mysql from 'mysql2/promise'
import type { MysqlTarget } from '../config.js'
import type { ProductCache } from '../platform/cache.js'

export interface Product {
  id: number
  sku: string
  name: string
  description: string
  category: string
  priceCents: number
  stock: number
}

export interface Review {
  author: string
  rating: number
  body: string
}

type Row = mysql.RowDataPacket

export function catalogPool(t: MysqlTarget, size = 8): mysql.Pool {
  return mysql.createPool({
    ...t,
    connectionLimit: size,
    connectTimeout: 1000,
    enableKeepAlive: true,
  })
}

function toProduct(r: Row): Product {
  return {
    id: Number(r.id),
    sku: String(r.sku),
    name: String(r.name),
    description: String(r.description),
    category: String(r.category),
    priceCents: Number(r.price_cents),
    stock: Number(r.stock),
  }
}

const COLS = 'id, sku, name, description, category, price_cents, stock'

export class Catalog {
  readonly #db: mysql.Pool
  readonly #cache: ProductCache | undefined
  constructor(db: mysql.Pool, cache?: ProductCache) {
    this.#db = db
    this.#cache = cache
  }

  async #rows(sql: string, params: unknown[]): Promise<Row[]> {
    const [rows] = await this.#db.query<Row[]>({ sql, timeout: 3000 }, params)
    return rows
  }

  async loadProduct(id: number): Promise<Product | null> {
    const rows = await this.#rows(`SELECT ${COLS} FROM products WHERE id = ?`, [id])
    return rows[0] ? toProduct(rows[0]) : null
  }

  /** Through the two-level cache unless `fresh`. */
  async product(id: number, fresh = false): Promise<Product | null> {
    if (fresh || !this.#cache) return this.loadProduct(id)
    return this.#cache.getOrLoad(`product:${id}`, () => this.loadProduct(id))
  }

  async products(ids: number[], fresh = false): Promise<Map<number, Product>> {
    const out = new Map<number, Product>()
    for (const id of ids) {
      const p = await this.product(id, fresh)
      if (p) out.set(id, p)
    }
    return out
  }

  /** Lists cache only ids; each product comes from its own entry, so a price change shows everywhere. */
  async page(page: number, perPage: number, fresh = false): Promise<Product[]> {
    if (fresh || !this.#cache) {
      return (
        await this.#rows(`SELECT ${COLS} FROM products ORDER BY id LIMIT ? OFFSET ?`, [
          perPage,
          (page - 1) * perPage,
        ])
      ).map(toProduct)
    }
    const ids = await this.#cache.getOrLoad(`pageids:${page}:${perPage}`, async () =>
      (
        await this.#rows('SELECT id FROM products ORDER BY id LIMIT ? OFFSET ?', [
          perPage,
          (page - 1) * perPage,
        ])
      ).map((r) => Number(r.id)),
    )
    return [...(await this.products(ids)).values()]
  }

  async search(q: string, limit = 48): Promise<Product[]> {
    const like = `%${q.replace(/[\\%_]/g, (c) => `\\${c}`)}%`
    return (
      await this.#rows(`SELECT ${COLS} FROM products WHERE name LIKE ? ORDER BY id LIMIT ?`, [
        like,
        limit,
      ])
    ).map(toProduct)
  }

  async recommendations(p: Product, fresh = false): Promise<Product[]> {
    const load = async () =>
      (
        await this.#rows(
          'SELECT id FROM products WHERE category = ? AND id <> ? ORDER BY (id * 7919 + ?) % 1000 LIMIT 4',
          [p.category, p.id, p.id],
        )
      ).map((r) => Number(r.id))
    const ids =
      fresh || !this.#cache ? await load() : await this.#cache.getOrLoad(`recids:${p.id}`, load)
    return [...(await this.products(ids, fresh)).values()]
  }

  async reviews(productId: number, fresh = false): Promise<Review[]> {
    const load = async () =>
      (
        await this.#rows('SELECT author, rating, body FROM reviews WHERE product_id = ? LIMIT 5', [
          productId,
        ])
      ).map((r) => ({
        author: String(r.author),
        rating: Number(r.rating),
        body: String(r.body),
      }))
    if (fresh || !this.#cache) return load()
    return this.#cache.getOrLoad(`reviews:${productId}`, load)
  }

  async setPrice(id: number, priceCents: number): Promise<boolean> {
    const [res] = await this.#db.query<mysql.ResultSetHeader>(
      'UPDATE products SET price_cents = ? WHERE id = ?',
      [priceCents, id],
    )
    if (res.affectedRows === 0) return false
    await this.#cache?.invalidate(`product:${id}`)
    return true
  }
}

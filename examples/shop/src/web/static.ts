/**
 * Static assets with content hashes in their names (`app.3f2a9c1e.css`), served with a
 * one-year immutable cache: a new deploy changes the name, so no browser keeps a stale file.
 */
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { extname, join } from 'node:path'
import { SHOP_DIR } from '../config.js'

export interface Asset {
  name: string
  hashedName: string
  body: Buffer
  contentType: string
}

const TYPES: Record<string, string> = {
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
}

const DIR = join(SHOP_DIR, 'src', 'web', 'assets')

function load(): Map<string, Asset> {
  const byName = new Map<string, Asset>()
  for (const name of readdirSync(DIR)) {
    const body = readFileSync(join(DIR, name))
    const ext = extname(name)
    const hash = createHash('sha256').update(body).digest('hex').slice(0, 10)
    const hashedName = `${name.slice(0, -ext.length)}.${hash}${ext}`
    byName.set(name, {
      name,
      hashedName,
      body,
      contentType: TYPES[ext] ?? 'application/octet-stream',
    })
  }
  return byName
}

const assets = load()
const byHashed = new Map([...assets.values()].map((a) => [a.hashedName, a]))

/** The public URL of an asset, e.g. `asset('app.css')` -> `/static/app.3f2a9c1e0b.css`. */
export function asset(name: string): string {
  const a = assets.get(name)
  if (!a) throw new Error(`unknown asset ${name}`)
  return `/static/${a.hashedName}`
}

export function findHashedAsset(hashedName: string): Asset | undefined {
  return byHashed.get(hashedName)
}

export const IMMUTABLE = 'public, max-age=31536000, immutable'

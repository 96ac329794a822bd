import { readFile } from 'node:fs/promises'
import { extname, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { InvalidArgumentError } from '../errors.js'
import type { ResharderOptions } from '../resharder.js'
import type { ShardPlacement } from '../reshardingPlan.js'
import type { SlotMapStoreOptions } from '../slotMapStore.js'

/**
 * The `--config` file of `ballast-reshard`: the resharder's options, with the store as
 * {@link SlotMapStoreOptions} (the CLI makes the store), and `next`, the shard list to move to.
 * A `.json` file holds it as JSON; any other file is an ES module whose default export is the
 * object, or a function (async or not) that returns it, so secrets can come from the
 * environment or a vault.
 */
export interface ReshardCliConfig extends Omit<ResharderOptions, 'store'> {
  /** The slot map store the routers follow: the same server, `table`, `fenceTable` and `lease`. */
  store: SlotMapStoreOptions
  /** The shard list to move to (`plan` and `start`; `--next` overrides it). */
  next?: ShardPlacement[]
}

function bad(file: string, expected: string, cause?: unknown): never {
  throw new InvalidArgumentError(`invalid config "${file}": ${expected}`, { cause })
}

/** Reads and checks the shape of a config file (the resharder checks the values). */
export async function loadConfig(file: string): Promise<ReshardCliConfig> {
  const path = resolve(file)
  let value: unknown
  if (extname(path) === '.json') {
    let text: string
    try {
      text = await readFile(path, 'utf8')
    } catch (cause) {
      bad(file, `cannot be read (${(cause as Error).message})`, cause)
    }
    try {
      value = JSON.parse(text)
    } catch (cause) {
      bad(file, `is not JSON (${(cause as Error).message})`, cause)
    }
  } else {
    let loaded: { default?: unknown }
    try {
      loaded = (await import(pathToFileURL(path).href)) as { default?: unknown }
    } catch (cause) {
      bad(file, `cannot be imported (${(cause as Error).message})`, cause)
    }
    value = loaded.default
    if (typeof value === 'function') value = await (value as () => unknown)()
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    bad(
      file,
      'expected an object { store, shards, tables, next? } (the default export of a module)',
    )
  const config = value as Record<string, unknown>
  if (typeof config.store !== 'object' || config.store === null)
    bad(file, '"store" must be the slot map store\'s options ({ server, … })')
  if (!Array.isArray(config.shards)) bad(file, '"shards" must be an array of shards')
  if (!Array.isArray(config.tables)) bad(file, '"tables" must be an array of { table, key }')
  if (config.next !== undefined && !Array.isArray(config.next))
    bad(file, '"next" must be an array of { id, weight? }')
  return config as unknown as ReshardCliConfig
}

/** `--next s1,s2,s3:2` (an id, optionally `:weight`) as a placement. */
export function parseNext(text: string): ShardPlacement[] {
  const shards = text.split(',').map((part) => part.trim())
  if (shards.some((part) => part === ''))
    throw new InvalidArgumentError(
      `invalid argument "--next": expected shard ids separated by commas, got "${text}"`,
    )
  return shards.map((part) => {
    const [id, weight] = part.split(':') as [string, string | undefined]
    if (weight === undefined) return { id }
    const n = Number(weight)
    if (!Number.isFinite(n) || n <= 0)
      throw new InvalidArgumentError(
        `invalid argument "--next": expected a positive weight after "${id}:", got "${weight}"`,
      )
    return { id, weight: n }
  })
}

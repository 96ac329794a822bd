import { HashRing } from '@ballast/lb'

/** The ring settings a router and a resharding plan must share to agree on placement. */
export interface RingSettings {
  pointsPerWeight?: number | undefined
  seed?: number | undefined
}

/**
 * Places every slot on the ring: `table[slot]` is the index (into `ids`) of the shard owning
 * the slot. Each slot is hashed onto the ring by its name `slot:<n>`, so the table depends only
 * on the shard ids, their weights and the ring settings.
 */
export function buildSlotTable(
  shards: ReadonlyArray<{ id: string; weight?: number | undefined }>,
  slots: number,
  ring: RingSettings = {},
): { ids: string[]; table: Uint16Array } {
  const hashRing = new HashRing(
    shards.map((s) => ({ id: s.id, weight: s.weight ?? 1 })),
    {
      ...(ring.pointsPerWeight === undefined ? {} : { pointsPerWeight: ring.pointsPerWeight }),
      ...(ring.seed === undefined ? {} : { seed: ring.seed }),
    },
  )
  const ids = shards.map((s) => s.id)
  const index = new Map(ids.map((id, i) => [id, i]))
  const table = new Uint16Array(slots)
  for (let slot = 0; slot < slots; slot++) table[slot] = index.get(hashRing.get(`slot:${slot}`))!
  return { ids, table }
}

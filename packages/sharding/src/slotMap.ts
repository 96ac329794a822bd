/**
 * Where a moving range is in its move (see `docs/resharding.md`): `copying` (rows are being
 * copied to the target; writers go on as before, the source's change log keeps their changes),
 * `catching-up` (changes made during the copy are being applied; writers of the range check the
 * source's fence row in their transaction), `fenced` (the cut-over holds the source's fence:
 * writes of the range wait, then go to the target). Once the move is done the range is owned by
 * the target and has no `moving`.
 */
export type MovePhase = 'copying' | 'catching-up' | 'fenced'

/** Where a range is moving to, and how far the move is. */
export interface SlotRangeMove {
  /** The shard the range moves to. */
  readonly to: string
  /** The move's phase. */
  readonly phase: MovePhase
}

/** Contiguous slots `[start, end)` owned by one shard, perhaps moving to another. */
export interface SlotRange {
  /** The first slot of the range. */
  readonly start: number
  /** One past the last slot of the range. */
  readonly end: number
  /** The shard that owns the range: its writes go there. */
  readonly shard: string
  /** Set while the range moves to another shard. */
  readonly moving?: SlotRangeMove
}

/**
 * A versioned slot map, as a {@link SlotMapStore} holds it: every slot `[0, slots)` in exactly
 * one range, ranges in slot order. `version` counts every change.
 */
export interface SlotMap {
  /** Counts every change of the map; a newer map has a higher version. */
  readonly version: number
  /** How many slots keys hash to (the router's `slots`). */
  readonly slots: number
  /** The ranges, in slot order, covering every slot once. */
  readonly ranges: readonly SlotRange[]
}

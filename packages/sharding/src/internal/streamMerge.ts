import type { ShardFailure } from '../errors.js'

/** Where a shard's rows go as they arrive. */
export interface RowSink {
  /** Takes one row, in the shard's order. */
  push(row: unknown): void
  /** Rows taken so far. */
  readonly count: number
}

/** The outcome of a {@link StreamMerge}. */
export interface StreamMergeResult<T> {
  /** The merged rows, at most `take`. */
  rows: T[]
  /** Shards that failed before the merge was complete, in shard order. */
  failures: ShardFailure[]
  /** Shards whose rows count, in shard order. */
  answered: string[]
}

class Source<T> implements RowSink {
  readonly index: number
  readonly id: string
  readonly owner: StreamMerge<T>
  readonly queue: T[] = []
  head = 0
  count = 0
  ended = false
  failed = false

  constructor(owner: StreamMerge<T>, index: number, id: string) {
    this.owner = owner
    this.index = index
    this.id = id
  }

  push(row: unknown): void {
    this.count++
    if (this.owner.complete || this.failed) return // merge done: the rest is only drained
    this.queue.push(row as T)
    this.owner.pump()
  }

  /** Whether the merge may take rows without hearing more from this source. */
  get ready(): boolean {
    return this.ended || this.failed || this.head < this.queue.length
  }
}

/**
 * A streaming k-way merge of shards that each send rows already sorted by the same order:
 * rows are merged as they arrive, and the merge is complete as soon as it has `take` rows
 * (or every shard has ended); shards still sending are then drained without merging.
 * A row is taken only when every shard still sending has a row buffered or has ended, so
 * the output is exactly the sorted merge of all the shards. Ties go to the lower shard.
 *
 * A shard that fails before the merge is complete either fails the merge (`'error'`: the
 * result waits for every shard to settle so every failure is listed) or is dropped with
 * every row it contributed (`'partial'`), leaving the exact merge of the other shards.
 */
export class StreamMerge<T> {
  readonly #sources: Source<T>[]
  readonly #compare: (a: T, b: T) => number
  readonly #take: number
  readonly #policy: 'error' | 'partial'
  readonly #out: T[] = []
  readonly #from: number[] = []
  readonly #failures: ShardFailure[] = []
  readonly #resolve: (result: StreamMergeResult<T>) => void
  #settled = 0
  complete = false
  /** Settles with the merge once it is complete (or, under `'error'`, once every shard settled after a failure). */
  readonly done: Promise<StreamMergeResult<T>>

  constructor(
    shardIds: readonly string[],
    compare: (a: T, b: T) => number,
    take: number,
    policy: 'error' | 'partial',
  ) {
    this.#sources = shardIds.map((id, i) => new Source(this, i, id))
    this.#compare = compare
    this.#take = take
    this.#policy = policy
    let resolve!: (result: StreamMergeResult<T>) => void
    this.done = new Promise((r) => {
      resolve = r
    })
    this.#resolve = resolve
    if (take <= 0) this.#finish()
  }

  /** The sink of shard `index`. */
  sink(index: number): RowSink {
    return this.#sources[index]!
  }

  /** Shard `index` sent its last row; `rows`, if given, are all its rows at once. */
  end(index: number, rows?: readonly unknown[]): void {
    const source = this.#sources[index]!
    if (source.ended || source.failed) return
    if (rows !== undefined) {
      source.count += rows.length
      if (!this.complete) for (const row of rows) source.queue.push(row as T)
    }
    source.ended = true
    this.#settle()
    this.pump()
  }

  /** Shard `index` failed. */
  fail(index: number, error: unknown): void {
    const source = this.#sources[index]!
    if (source.ended || source.failed) return
    source.failed = true
    source.queue.length = 0
    this.#settle()
    // Once complete, the result no longer depends on it: every row taken was decided with this
    // shard's next row in hand (or after its end).
    if (this.complete) return
    this.#failures.push({ shard: source.id, error })
    if (this.#policy === 'partial') {
      // Drop the rows it contributed: what is left is the merge of the other shards.
      let w = 0
      for (let r = 0; r < this.#out.length; r++) {
        if (this.#from[r] === index) continue
        this.#out[w] = this.#out[r]!
        this.#from[w] = this.#from[r]!
        w++
      }
      this.#out.length = w
      this.#from.length = w
    }
    this.pump()
  }

  /** Takes every row that can be taken now. */
  pump(): void {
    if (this.complete) return
    if (this.#failures.length > 0 && this.#policy === 'error') {
      if (this.#settled === this.#sources.length) this.#finish()
      return
    }
    const sources = this.#sources
    const compare = this.#compare
    while (this.#out.length < this.#take) {
      let best: Source<T> | undefined
      for (const s of sources) {
        if (!s.ready) return // wait: this shard's next row may come first
        if (s.head >= s.queue.length) continue // ended or failed, nothing left
        if (best === undefined || compare(s.queue[s.head]!, best.queue[best.head]!) < 0) best = s
      }
      if (best === undefined) break // every shard ended
      this.#out.push(best.queue[best.head]!)
      this.#from.push(best.index)
      best.head++
      if (best.head > 1024 && best.head * 2 > best.queue.length) {
        best.queue.splice(0, best.head)
        best.head = 0
      }
    }
    this.#finish()
  }

  #settle(): void {
    this.#settled++
  }

  #finish(): void {
    if (this.complete) return
    this.complete = true
    for (const s of this.#sources) s.queue.length = 0
    const failed = new Set(this.#failures.map((f) => f.shard))
    const order = new Map(this.#sources.map((s) => [s.id, s.index]))
    this.#failures.sort((a, b) => order.get(a.shard)! - order.get(b.shard)!)
    this.#resolve({
      rows: this.#out,
      failures: this.#failures,
      answered: this.#sources.filter((s) => !failed.has(s.id)).map((s) => s.id),
    })
  }
}

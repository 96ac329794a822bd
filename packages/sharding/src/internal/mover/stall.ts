import { ShardingClosedError, ShardUnavailableError, SlotMoveStalledError } from '../../errors.js'
import type { MoveFields, MoverContext } from './context.js'
import type { MoveLock } from './lock.js'

const FIRST_BACKOFF_MS = 100
const MAX_BACKOFF_MS = 5000

/**
 * Runs a resumable step (the copy, a catch-up pass) and rides out a shard that stops answering:
 * on {@link ShardUnavailableError} it waits (100 ms doubling to 5 s), emits `stalled`, and once
 * the shard answers a probe again (and the move lock is still this step's) emits `resumed` and
 * runs the step again, which goes on from its kept progress. Gives up with
 * {@link SlotMoveStalledError} after `stallTimeout`, or with `signal.reason` when it aborts.
 */
export async function rideOut<R>(
  context: MoverContext,
  operation: string,
  fields: MoveFields,
  lock: MoveLock,
  signal: AbortSignal | undefined,
  run: () => Promise<R>,
): Promise<R> {
  const { events } = context
  for (;;) {
    let failure: ShardUnavailableError
    try {
      return await run()
    } catch (error) {
      if (!(error instanceof ShardUnavailableError)) throw error
      failure = error
    }
    const shard = failure.shard
    const stalledAt = Date.now()
    let backoff = FIRST_BACKOFF_MS
    for (let attempt = 1; ; attempt++) {
      signal?.throwIfAborted()
      if (context.closing.aborted)
        throw new ShardingClosedError('slot mover', operation, { cause: failure })
      const stalledMs = Date.now() - stalledAt
      if (stalledMs >= context.stallTimeoutMs)
        throw new SlotMoveStalledError(shard, operation, stalledMs, { cause: failure })
      if (events.has('stalled'))
        events.emit('stalled', { ...fields, shard, error: failure, attempt })
      await pause(Math.min(backoff, context.stallTimeoutMs - stalledMs), signal, context.closing)
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS)
      try {
        await context.connections.on(shard, (c) => context.connections.query(c, 'SELECT 1'))
        await lock.ensure()
        break
      } catch (error) {
        if (!(error instanceof ShardUnavailableError)) throw error
        failure = error
      }
    }
    if (events.has('resumed'))
      events.emit('resumed', { ...fields, shard, stalledMs: Date.now() - stalledAt })
  }
}

/** Waits `ms`; rejects with the signal's reason as soon as it aborts, and ends early when the mover closes. */
function pause(ms: number, signal: AbortSignal | undefined, closing: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const settle = () => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', aborted)
      closing.removeEventListener('abort', finish)
    }
    const finish = () => {
      settle()
      resolve()
    }
    const aborted = () => {
      settle()
      reject(signal!.reason)
    }
    const timer = setTimeout(finish, ms)
    signal?.addEventListener('abort', aborted, { once: true })
    closing.addEventListener('abort', finish, { once: true })
  })
}

import type { BusMessage } from './bus.js'

/**
 * The one-letter types of bus messages, by name. The letters are the wire format, shared with
 * every other instance (older versions included): never change one.
 */
export const MESSAGE_TYPE = {
  /** Keys were written or deleted (`k`, with `v`: the versions a set wrote). */
  keysInvalidated: 'k',
  /** Every key carrying one of the tags was deleted (`g`). */
  tagsInvalidated: 'g',
  /** The namespace moved to a new generation (`n`). */
  namespaceCleared: 'c',
  /** An instance checks its own subscription; nobody else acts on it. */
  heartbeat: 'h',
  /** A lock holder stored the value of a key (`k`): its waiters may read L2 now. */
  keyFilled: 'f',
} as const

/** A message before the bus stamps it with its origin and sequence number. */
export type OutgoingMessage = Omit<BusMessage, 'o' | 's'>

/** `keys` were written (`versions[i]`: the version written for `keys[i]`) or deleted (no versions). */
export function keysInvalidated(
  keys: readonly string[],
  versions?: readonly string[],
): OutgoingMessage {
  return versions === undefined
    ? { t: MESSAGE_TYPE.keysInvalidated, k: [...keys] }
    : { t: MESSAGE_TYPE.keysInvalidated, k: [...keys], v: [...versions] }
}

/** Every key carrying one of `tags` was deleted. */
export function tagsInvalidated(tags: readonly string[]): OutgoingMessage {
  return { t: MESSAGE_TYPE.tagsInvalidated, g: [...tags] }
}

/** The namespace moved to `generation` (receivers re-read the generation key rather than trust it). */
export function namespaceCleared(generation: number): OutgoingMessage {
  return { t: MESSAGE_TYPE.namespaceCleared, n: generation }
}

/** The lock holder of `key` stored its value. */
export function keyFilled(key: string): OutgoingMessage {
  return { t: MESSAGE_TYPE.keyFilled, k: [key] }
}

/** An instance's heartbeat, echoed back to it through its own subscription. */
export function heartbeat(): OutgoingMessage {
  return { t: MESSAGE_TYPE.heartbeat }
}

/** Payload of the `replica-ejected` event. */
export interface ReplicaEjectedEvent {
  /** The replica's shard. */
  shard: string
  /** The replica's id, `<shard>/replica-<n>`. */
  replica: string
  /** Why it left rotation: the failed health check (e.g. `SQL thread stopped`, `lag over the bound`) or `ejected: …`. */
  reason: string
}

/** Payload of the `replica-restored` event. */
export interface ReplicaRestoredEvent {
  /** The replica's shard. */
  shard: string
  /** The replica's id, `<shard>/replica-<n>`. */
  replica: string
}

/**
 * Why a read meant for a replica went to the primary: no replica qualified, the replicas
 * tried failed, the replica did not apply the causal token within `gtidWaitTimeout`, or the
 * token demands a position the router has not seen the primary write yet (a write of another
 * process since the last health check, or a forged position): no replica waits for it; or
 * (`slot-moved`) the token names a shard slots moved off to this one, and the position of this
 * shard's primary that holds the copied rows could not be read.
 */
export type FallbackReason =
  | 'no-healthy-replica'
  | 'replica-error'
  | 'gtid-wait-timeout'
  | 'token-ahead-of-primary'
  | 'slot-moved'

/** Payload of the `fell-back-to-primary` event. */
export interface FellBackToPrimaryEvent {
  /** The shard of the read. */
  shard: string
  /** Why the primary served it. */
  reason: FallbackReason
  /** The last replica error, with `reason: 'replica-error'`. */
  error?: unknown
}

/** Payload of the `causal-token-refused` event. */
export interface CausalTokenRefusedEvent {
  /**
   * Why: `malformed` (not a signed token, e.g. unsigned or cut), `bad-signature` (tampered, or
   * signed with a secret the router does not hold), `ahead-of-primary` (positions the primary
   * had not written when sampled after the request began; they were dropped).
   */
  reason: 'malformed' | 'bad-signature' | 'ahead-of-primary'
  /** The shard whose positions were dropped, with `ahead-of-primary`. */
  shard?: string
}

/** Payload of the `health-check-failed` event. */
export interface HealthCheckFailedEvent {
  /** The server's shard. */
  shard: string
  /** The server's id, `<shard>/primary` or `<shard>/replica-<n>`. */
  server: string
  /** The error of the check. */
  error: unknown
}

/** Payload of the `primary-switched` event. */
export interface PrimarySwitchedEvent {
  /** The shard. */
  shard: string
  /** The new primary's address, `host:port` (or its socket path). */
  server: string
  /** The old primary's address. */
  previous: string
  /** Statements that were waiting for or running on the old primary when it was replaced. */
  inFlight: number
}

/** The events of a {@link ShardRouter}, with their payloads. */
export interface ShardRouterEvents {
  /** A replica left rotation: failed health check or lag over the bound (`reason`), or ejected by outlier detection. */
  'replica-ejected': ReplicaEjectedEvent
  /** A replica is back in rotation. */
  'replica-restored': ReplicaRestoredEvent
  /** A read meant for a replica went to the primary. */
  'fell-back-to-primary': FellBackToPrimaryEvent
  /** A health check could not reach a server. */
  'health-check-failed': HealthCheckFailedEvent
  /** A causal token string was refused, or positions of a token were dropped; the request goes on without them. */
  'causal-token-refused': CausalTokenRefusedEvent
  /** The shard was pointed at a new primary ({@link ShardRouter.setPrimary}). */
  'primary-switched': PrimarySwitchedEvent
}

/** An endpoint given to a balancer: an id, an optional weight and an optional value. */
export interface EndpointInput<T = string> {
  /** Unique id of the endpoint, such as `http://10.0.0.7:8080`; it places the endpoint on the hash ring. */
  id: string
  /**
   * Relative share of traffic (weighted strategies) or of keys (hashing strategies).
   * @default 1
   */
  weight?: number
  /**
   * Anything the caller wants back from `pick()`: a connection pool, a URL, a config.
   * @default the id
   */
  value?: T
}

/** The live view of one endpoint of a balancer, as returned by `pick()`. */
export interface Endpoint<T = string> {
  /** Unique id of the endpoint. */
  readonly id: string
  /** The value given with the endpoint (the id when none was given). */
  readonly value: T
  /** The configured weight. */
  readonly weight: number
  /** The weight in use now: lower than `weight` while the endpoint is slow-starting. */
  readonly effectiveWeight: number
  /** Requests begun on this endpoint and not yet ended. */
  readonly inFlight: number
  /** Whether active health checks consider the endpoint healthy (true until a check says otherwise). */
  readonly healthy: boolean
  /** Whether passive outlier detection has ejected the endpoint for now. */
  readonly ejected: boolean
}

/** A snapshot of one endpoint's counters, from `stats()`. */
export interface EndpointStats {
  /** Unique id of the endpoint. */
  id: string
  /** The configured weight. */
  weight: number
  /** The weight in use now (lower while slow-starting). */
  effectiveWeight: number
  /** Whether active health checks consider it healthy. */
  healthy: boolean
  /** Whether outlier detection has ejected it. */
  ejected: boolean
  /** Whether it is ramping up after being added or restored. */
  slowStarting: boolean
  /** How many times it has been ejected (decays while it behaves). */
  ejections: number
  /** How many times it has been ejected since it was added (never decays). */
  totalEjections: number
  /** Requests in flight now. */
  inFlight: number
  /** Times it was returned by `pick()`. */
  picks: number
  /** Requests that ended as successes. */
  succeeded: number
  /** Requests that ended as failures. */
  failed: number
  /** Failures since the last success. */
  consecutiveFailures: number
  /** The peak-EWMA latency estimate in milliseconds (0 before the first sample). */
  latencyEwmaMs: number
}

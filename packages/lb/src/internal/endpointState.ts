import type { Endpoint } from '../endpoint.js'

/** Mutable state behind an {@link Endpoint}; only the balancer writes it. */
export class EndpointState<T> implements Endpoint<T> {
  readonly id: string
  value: T
  weight: number
  effectiveWeight: number
  inFlight = 0
  healthy = true
  ejected = false
  /** Whether the strategy may pick it now (available, or any endpoint in panic). */
  usable = true
  removed = false
  // counters
  picks = 0
  successes = 0
  failures = 0
  consecutiveFailures = 0
  /** The sum of its ended requests' times from begin() to end(), in clock units (ms). */
  responseTimeMs = 0
  ejections = 0
  /** Ejections since the endpoint was added (never decays, unlike `ejections`). */
  totalEjections = 0
  lastEjectionEnd = 0
  ejectionTimer: ReturnType<typeof setTimeout> | undefined = undefined
  // failure-rate windows
  windowStart = 0
  windowRequests = 0
  windowFailures = 0
  previousRequests = 0
  previousFailures = 0
  // slow start (NaN when not ramping)
  slowStartFrom = Number.NaN
  // smooth weighted round robin
  current = 0
  // peak EWMA
  cost = 0
  stamp = 0

  constructor(id: string, value: T, weight: number) {
    this.id = id
    this.value = value
    this.weight = weight
    this.effectiveWeight = weight
  }
}

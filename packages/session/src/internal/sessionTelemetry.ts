import { type ObservedInstrument, observe } from '@ballast/shared'
import type { Attributes } from '@opentelemetry/api'
import type { Cluster, Redis } from 'ioredis'
import type { Counters, DestroyReason } from './engine.js'
import type { RedisClient } from './scripts.js'

/** Instrumentation scope of every meter and tracer of the package. */
export const SCOPE = '@ballast/session'

/** How a load or a save ended (`ballast.session.outcome`). */
export const OUTCOME = 'ballast.session.outcome'
/** Why a session was destroyed or an id refused (`ballast.session.reason`). */
export const REASON = 'ballast.session.reason'

/** Span names of the package's own operations (the Redis round trips are named by command). */
export const LOAD_SPAN = 'ballast.session.load'
export const SAVE_SPAN = 'ballast.session.save'

/** The Redis latency histogram of the database client semantic conventions. */
export const DURATION = 'db.client.operation.duration'

export const DESTROY_REASONS: readonly DestroyReason[] = [
  'logout',
  'logout-everywhere',
  'linked',
  'evicted',
  'replaced',
]

/** Suspicion reasons, in the order of `SuspicionReason`; the first two refuse a request's id. */
export const SUSPICION_REASONS = [
  'malformed',
  'bad-signature',
  'unknown',
  'ticket-malformed',
  'ticket-unknown',
  'ticket-unreadable',
  'ticket-origin-mismatch',
  'ticket-login-ended',
] as const

const INSTRUMENTS = {
  'ballast.session.loads': {
    kind: 'counter',
    unit: '{load}',
    description:
      'Session lookups by outcome: found, expired (a well-signed id whose session is gone), invalid (an id refused before Redis), failed (Redis did not answer)',
  },
  'ballast.session.created': {
    kind: 'counter',
    unit: '{session}',
    description: 'Sessions written for the first time',
  },
  'ballast.session.regenerated': {
    kind: 'counter',
    unit: '{session}',
    description: 'Session ids renewed (login, privilege change): the old id ended',
  },
  'ballast.session.destroyed': {
    kind: 'counter',
    unit: '{session}',
    description: 'Sessions deleted, by reason',
  },
  'ballast.session.saves': {
    kind: 'counter',
    unit: '{save}',
    description:
      'Ends of requests on a stored session, by outcome: saved, refused (the session had ended), unchanged (nothing to write)',
  },
  'ballast.session.suspicions': {
    kind: 'counter',
    unit: '{suspicion}',
    description: 'Refused ids and tickets (suspicion-raised events), by reason',
  },
  'ballast.session.tickets': {
    kind: 'counter',
    unit: '{ticket}',
    description: 'SSO tickets by outcome: issued, redeemed, rejected',
  },
} satisfies Record<string, ObservedInstrument>

/**
 * Registers the observable counters, read from the store's counters when the SDK collects:
 * the operations that move them pay nothing for metrics. Returns the function that removes them.
 */
export function observeCounters(
  meter: Parameters<typeof observe>[0],
  counters: Counters,
): () => void {
  return observe(meter, INSTRUMENTS, (record) => {
    const suspicions = counters.suspicionsByReason
    record('ballast.session.loads', counters.hits, { [OUTCOME]: 'found' })
    record('ballast.session.loads', counters.misses, { [OUTCOME]: 'expired' })
    record('ballast.session.loads', suspicions.malformed + suspicions['bad-signature'], {
      [OUTCOME]: 'invalid',
    })
    record('ballast.session.loads', counters.loadsFailed, { [OUTCOME]: 'failed' })
    record('ballast.session.created', counters.created)
    record('ballast.session.regenerated', counters.regenerated)
    for (const reason of DESTROY_REASONS) {
      record('ballast.session.destroyed', counters.destroyedByReason[reason], { [REASON]: reason })
    }
    record('ballast.session.saves', counters.saves - counters.savesRefused, { [OUTCOME]: 'saved' })
    record('ballast.session.saves', counters.savesRefused, { [OUTCOME]: 'refused' })
    record('ballast.session.saves', counters.unchanged, { [OUTCOME]: 'unchanged' })
    for (const reason of SUSPICION_REASONS) {
      record('ballast.session.suspicions', suspicions[reason], { [REASON]: reason })
    }
    record('ballast.session.tickets', counters.ticketsIssued, { [OUTCOME]: 'issued' })
    record('ballast.session.tickets', counters.ticketsRedeemed, { [OUTCOME]: 'redeemed' })
    record('ballast.session.tickets', counters.ticketsRejected, { [OUTCOME]: 'rejected' })
  })
}

/**
 * Attributes every Redis round trip carries: `db.system.name`, and for a standalone client the
 * server it talks to (a Cluster's node changes with the key's slot, so it is left out).
 */
export function redisAttributes(client: RedisClient): Attributes {
  const attributes: Attributes = { 'db.system.name': 'redis' }
  if ((client as Cluster).isCluster === true) return attributes
  const options = (client as Redis).options as
    | { host?: unknown; port?: unknown; path?: unknown }
    | undefined
  if (options !== undefined && typeof options.host === 'string' && options.path === undefined) {
    attributes['server.address'] = options.host
    if (typeof options.port === 'number') attributes['server.port'] = options.port
  }
  return attributes
}

import { merge } from '@ballast/shared'
import { isResilienceError } from '../errors.js'
import type { HttpIdempotencyDefaults, HttpIdempotencyOptions } from '../httpIdempotencyOptions.js'
import type { ClaimOutcome, Idempotency, IdempotencyClaim } from '../idempotency.js'
import { check } from './validate.js'

/** A response as stored for replay. */
export interface StoredResponse {
  /** Status code. */
  s: number
  /** Headers, lower-cased names. */
  h: Record<string, string | string[]>
  /** Body, base64. */
  b: string
}

/** Headers never stored: hop-by-hop, per-response, or per-client. */
export const UNSTORED_HEADERS = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'content-length',
  'date',
  'set-cookie',
  'upgrade',
  'trailer',
])

/** An RFC 9457 problem response. */
export interface Problem {
  status: number
  headers: Record<string, string>
  body: { type: string; title: string; status: number; code: string; detail?: string }
}

export function problem(
  status: number,
  code: string,
  title: string,
  detail?: string,
  headers: Record<string, string> = {},
): Problem {
  return {
    status,
    headers,
    body: { type: 'about:blank', title, status, code, ...(detail === undefined ? {} : { detail }) },
  }
}

/** Codes of IdempotencyKeyInvalidError and IdempotencyScopeMissingError (matched by code: see gate()). */
const IDEMPOTENCY_KEY_INVALID = 'E_RESILIENCE_IDEMPOTENCY_KEY_INVALID'
const IDEMPOTENCY_SCOPE_MISSING = 'E_RESILIENCE_IDEMPOTENCY_SCOPE_MISSING'

/** The outcome of the request phase of idempotent HTTP handling. */
export type Gate =
  | { kind: 'pass' }
  | { kind: 'problem'; problem: Problem }
  | { kind: 'replay'; response: StoredResponse }
  | { kind: 'claimed'; claim: IdempotencyClaim }

/**
 * Reads the key, claims it in `scope`, and decides what the request gets. `scope` is
 * `undefined` only when the adapter opted out (`scope: false`); `''` is a request whose scope
 * function found no caller (answered 400).
 */
export async function gate(
  store: Idempotency,
  key: string | undefined,
  required: boolean,
  input: unknown,
  scope?: string,
): Promise<Gate> {
  if (key === undefined || key === '') {
    if (!required) return { kind: 'pass' }
    return {
      kind: 'problem',
      problem: problem(
        400,
        IDEMPOTENCY_KEY_INVALID,
        'Idempotency-Key is missing',
        'This operation requires an Idempotency-Key header.',
      ),
    }
  }
  let outcome: ClaimOutcome
  try {
    outcome = await store.claim(key, input, { scope })
  } catch (error) {
    // By code, not instanceof: the store may come from another copy of the package (the CJS
    // build beside the ESM one), whose error classes are not ours; a 400 must not become a 500.
    const code = isResilienceError(error) ? error.code : undefined
    if (code === IDEMPOTENCY_KEY_INVALID) {
      return {
        kind: 'problem',
        problem: problem(400, code, 'Idempotency-Key is malformed', (error as Error).message),
      }
    }
    if (code === IDEMPOTENCY_SCOPE_MISSING) {
      return {
        kind: 'problem',
        problem: problem(
          400,
          code,
          'Idempotency-Key has no owner',
          'This operation scopes idempotency keys to the caller, and the request names none.',
        ),
      }
    }
    if (code === 'E_RESILIENCE_IDEMPOTENCY_NOT_REPLICATED') {
      // Redis answered, the claim did not reach a replica and was given back: not fail-open's case
      return {
        kind: 'problem',
        problem: problem(
          503,
          code,
          'Idempotency store not replicated',
          'The request was not processed; retry later with the same key.',
          { 'retry-after': '1' },
        ),
      }
    }
    if (code === 'E_RESILIENCE_IDEMPOTENCY_UNAVAILABLE') {
      if (store.failOpen) return { kind: 'pass' }
      return {
        kind: 'problem',
        problem: problem(
          503,
          'E_RESILIENCE_IDEMPOTENCY_UNAVAILABLE',
          'Idempotency store unavailable',
          'The request was not processed; retry later with the same key.',
          { 'retry-after': '1' },
        ),
      }
    }
    throw error
  }
  switch (outcome.status) {
    case 'mismatch':
      return {
        kind: 'problem',
        problem: problem(
          422,
          'E_RESILIENCE_IDEMPOTENCY_MISMATCH',
          'Idempotency-Key reused with a different request',
          'This key was used before with a different request payload.',
        ),
      }
    case 'inFlight':
      return {
        kind: 'problem',
        problem: problem(
          409,
          'E_RESILIENCE_IDEMPOTENCY_IN_FLIGHT',
          'A request with this Idempotency-Key is in progress',
          'Retry after the original request has completed.',
          {
            'retry-after': String(Math.max(1, Math.ceil(outcome.retryAfterMs / 1000))),
          },
        ),
      }
    case 'completed': {
      const record = outcome.record
      if (record.ok) return { kind: 'replay', response: record.value as StoredResponse }
      // A stored failure from run(): present it as a server error that will not change.
      return {
        kind: 'problem',
        problem: problem(
          500,
          record.error.code ?? 'E_RESILIENCE_IDEMPOTENT_FAILURE',
          record.error.name,
          record.error.message,
        ),
      }
    }
    case 'acquired':
      return { kind: 'claimed', claim: outcome.claim }
  }
}

/** Builds the stored form of a response. */
export function toStored(
  status: number,
  headers: Record<string, number | string | string[] | undefined>,
  body: Buffer,
): StoredResponse {
  const h: Record<string, string | string[]> = {}
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase()
    if (value === undefined || UNSTORED_HEADERS.has(lower)) continue
    h[lower] = typeof value === 'number' ? String(value) : value
  }
  return { s: status, h, b: body.toString('base64') }
}

/** Settles a claim with the response: stores it, or releases the key on a 5xx (transient). */
export async function settleClaim(
  claim: IdempotencyClaim,
  stored: StoredResponse,
  isTransientStatus: (status: number) => boolean,
): Promise<void> {
  try {
    if (isTransientStatus(stored.s)) await claim.release()
    else await claim.complete(stored)
  } catch {
    // Fenced or Redis lost: the response still goes out; the store emitted an event.
  }
}

/** Default: a 5xx (and 429) is transient: the key is released and a retry runs again. */
export function defaultTransientStatus(status: number): boolean {
  return status >= 500 || status === 429
}

/** An adapter's defaults: the same for every framework but for how the fingerprint reads the request. */
export function httpIdempotencyDefaults<Req>(
  fingerprint: (req: Req) => unknown,
): HttpIdempotencyDefaults<Req> {
  return Object.freeze({
    header: 'idempotency-key',
    required: true,
    methods: Object.freeze(['POST', 'PATCH']) as readonly string[],
    fingerprint,
    replayHeader: 'idempotent-replayed',
    isTransientStatus: defaultTransientStatus,
  })
}

/** The HTTP idempotency options, merged with the adapter's defaults and validated once. */
export interface ResolvedHttpIdempotency<Req> {
  header: string
  replayHeader: string
  required: boolean
  methods: ReadonlySet<string>
  fingerprint: (req: Req) => unknown
  isTransientStatus: (status: number) => boolean
  /** The request's scope: `undefined` when opted out, `''` when the request names no caller. */
  scopeOf: (req: Req) => string | undefined
}

const UNSCOPED = (): undefined => undefined

/** Merges and validates the options of either HTTP adapter; throws naming the bad option. */
export function resolveHttpIdempotency<Req>(
  defaults: HttpIdempotencyDefaults<Req>,
  options: HttpIdempotencyOptions<Req>,
): ResolvedHttpIdempotency<Req> {
  if (options !== undefined) check.object('options', options)
  const o = merge(defaults, options)
  const methods: unknown = o.methods
  if (!Array.isArray(methods)) check.invalid('methods', 'an array of HTTP methods', methods)
  const resolved = {
    header: check.string('header', o.header).toLowerCase(),
    replayHeader: check.string('replayHeader', o.replayHeader),
    required: check.boolean('required', o.required),
    methods: new Set((methods as unknown[]).map((m) => String(m).toUpperCase())),
    fingerprint: check.func<(req: Req) => unknown>('fingerprint', o.fingerprint),
    isTransientStatus: check.func<(status: number) => boolean>(
      'isTransientStatus',
      o.isTransientStatus,
    ),
  }
  const scope = o.scope
  if (scope !== false && typeof scope !== 'function') {
    check.invalid(
      'scope',
      "a function returning the caller's user, tenant or API key id (keys are otherwise shared " +
        'between callers: one could replay or block another’s request), or false to opt out',
      scope,
    )
  }
  const scopeOf =
    scope === false
      ? UNSCOPED
      : (req: Req): string => {
          const value = scope(req)
          // Anything but a non-empty string names no caller: '' makes the store refuse it.
          return typeof value === 'string' ? value : ''
        }
  return { ...resolved, scopeOf }
}

/** The words of a camelCase, PascalCase or kebab-case name: `L2UnavailableError` → `L2`, `Unavailable`, `Error`. */
export function words(name: string): string[] {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1 $2')
    .split(/[\s_\-:]+/)
    .filter(Boolean)
}

/** `LoaderTimeout` → `LOADER_TIMEOUT`, `L2Unavailable` → `L2_UNAVAILABLE`. */
export function screamingSnake(name: string): string {
  return words(name)
    .map((w) => w.toUpperCase())
    .join('_')
}

/** `endpoint-added` → `EndpointAdded`. */
export function pascal(name: string): string {
  return words(name)
    .map((w) => w.charAt(0).toUpperCase() + w.slice(1))
    .join('')
}

/**
 * A unit at the end of an option name: `intervalMs`, `checkPeriodSeconds`, `ttlSecs`,
 * `delayMillis`, `windowMinutes`. Bytes are the one unit a name may carry.
 */
export const UNIT_SUFFIX =
  /(?:^|[a-z0-9])(?:Ms|Msec|Msecs|Millis|Milliseconds|Sec|Secs|Seconds|Min|Mins|Minutes|Hr|Hrs|Hours|Days|Micros|Microseconds|Nanos|Nanoseconds)$|^(?:ms|msec|millis|milliseconds|sec|secs|seconds|mins|minutes|hrs|hours|days)$/

/** Whether an option name ends in a unit (see {@link UNIT_SUFFIX}). */
export function hasUnitSuffix(name: string): boolean {
  return UNIT_SUFFIX.test(name)
}

/**
 * Last words of an option name that say it is a time: `timeout`, `connectTimeout`, `interval`,
 * `pollInterval`, `initialDelay`, `ttl`, `lease`, `window`, `grace`, `retention`, ...
 */
export const TIME_WORDS = new Set([
  'timeout',
  'interval',
  'delay',
  'ttl',
  'lease',
  'window',
  'grace',
  'retention',
  'wait',
  'expiration',
  'expiry',
  'duration',
  'heartbeat',
  'period',
  'elapsed',
  'lag',
  'age',
  'time',
  'decay',
  'backoff',
])

/** Whether an option name says it is a time: its last word is one of {@link TIME_WORDS}. */
export function saysTime(name: string): boolean {
  const last = words(name).pop()
  return last !== undefined && TIME_WORDS.has(last.toLowerCase())
}

/** Documentation that says a number is milliseconds: "in milliseconds", "in ms", "this many milliseconds". */
export const MILLISECONDS_DOC = /\b(?:in|many) (?:ms|milliseconds)\b/i

/**
 * Past participles that do not end in `ed`, accepted as the last word of an event name
 * (`connection-lost`, `message-sent`).
 */
export const IRREGULAR_PARTICIPLES = new Set([
  'begun',
  'broken',
  'built',
  'caught',
  'chosen',
  'done',
  'drawn',
  'found',
  'given',
  'gone',
  'held',
  'hit',
  'kept',
  'left',
  'lost',
  'made',
  'met',
  'put',
  'read',
  'run',
  'seen',
  'sent',
  'set',
  'shown',
  'shut',
  'split',
  'spent',
  'struck',
  'taken',
  'thrown',
  'told',
  'undone',
  'won',
  'written',
])

/** Kebab-case: lowercase words (letters and digits) joined by single hyphens. */
export const KEBAB_CASE = /^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$/

/** Irregular simple past forms, for phrasal verbs such as `fell-back` and `gave-up`. */
export const IRREGULAR_PAST = new Set([
  'began',
  'broke',
  'came',
  'chose',
  'drew',
  'fell',
  'gave',
  'got',
  'grew',
  'knew',
  'ran',
  'rose',
  'shook',
  'took',
  'threw',
  'went',
  'wrote',
])

/** Particles that end a phrasal verb (`timed-out`, `fell-back`, `backed-off`). */
export const PARTICLES = new Set([
  'away',
  'back',
  'down',
  'in',
  'off',
  'out',
  'over',
  'through',
  'up',
])

/**
 * Whether a kebab-case name ends in a verb in the past: a past participle (`opened`,
 * `endpoint-added`, `connection-lost`), or a phrasal verb in the past (`timed-out`, `fell-back`).
 */
export function isPastTense(name: string): boolean {
  const parts = name.split('-')
  let last = parts.pop() ?? ''
  const particle = PARTICLES.has(last) && parts.length > 0
  if (particle) last = parts.pop() as string
  return (
    last.endsWith('ed') || IRREGULAR_PARTICIPLES.has(last) || (particle && IRREGULAR_PAST.has(last))
  )
}

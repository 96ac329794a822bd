const BRAND = Symbol.for('ballast.error')

/** Where a server's address came from: the environment, a testcontainers container, or the local default. */
export type ServerSource = 'env' | 'container' | 'local'

/** What {@link ServerUnavailableError} carries besides its message. */
export interface ServerUnavailableDetails {
  /** The server that did not answer, e.g. `'redis'`. */
  server: string
  /** The address tried (a URL, or a comma-separated `host:port` list for a cluster). */
  address: string
  /** Where the address came from. */
  source: ServerSource
  /** Where the address came from, in words (e.g. `REDIS_URL`, or `local default`). */
  origin: string
  /** The shell command that starts the server on this machine. */
  startCommand: string
  /** The underlying failure. */
  cause?: unknown
}

/**
 * A server a test needs did not answer. The message names the server, the address tried,
 * where that address came from, and the command that starts it. Tests never skip on it.
 */
export class ServerUnavailableError extends Error {
  /** A stable identifier of the failure. */
  readonly code = 'E_TESTKIT_SERVER_UNAVAILABLE'
  /** A new start of the server can make the next attempt succeed. */
  readonly retryable = true
  /** The server that did not answer, e.g. `'redis'`. */
  readonly server: string
  /** The address tried. */
  readonly address: string
  /** Where the address came from. */
  readonly source: ServerSource
  /** The shell command that starts the server. */
  readonly startCommand: string
  override name = 'ServerUnavailableError'

  constructor(details: ServerUnavailableDetails) {
    const reason =
      details.cause instanceof Error
        ? details.cause.message
        : details.cause === undefined
          ? 'no answer'
          : String(details.cause)
    super(
      `${details.server} did not answer at ${details.address} (address from ${details.origin}): ${reason}\n` +
        `Start it with: ${details.startCommand}`,
      details.cause === undefined ? undefined : { cause: details.cause },
    )
    this.server = details.server
    this.address = details.address
    this.source = details.source
    this.startCommand = details.startCommand
    Object.defineProperty(this, BRAND, { value: '@ballast/testkit' })
  }
}

/** Whether `error` is a {@link ServerUnavailableError} (from any installed copy of testkit). */
export function isServerUnavailableError(error: unknown): error is ServerUnavailableError {
  return (
    typeof error === 'object' &&
    error !== null &&
    (error as Record<symbol, unknown>)[BRAND] === '@ballast/testkit' &&
    (error as { code?: unknown }).code === 'E_TESTKIT_SERVER_UNAVAILABLE'
  )
}

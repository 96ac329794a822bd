/** Bounded waits for integration tests: a hang fails fast, naming what it waited for. */

function describeDetail(detail: (() => unknown) | undefined): string {
  if (detail === undefined) return ''
  try {
    return `; ${JSON.stringify(detail())}`
  } catch {
    return ''
  }
}

/** Polls `check` every 25 ms; rejects after `timeoutMs` naming `what` (and `detail()`, e.g. stats). */
export function until(
  check: () => boolean,
  timeoutMs = 10_000,
  what = 'condition',
  detail?: () => unknown,
): Promise<void> {
  const started = Date.now()
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (check()) resolve()
      else if (Date.now() - started > timeoutMs)
        reject(new Error(`${what} not met in ${timeoutMs} ms${describeDetail(detail)}`))
      else setTimeout(tick, 25)
    }
    tick()
  })
}

/** Settles like `promise`, or rejects after `ms` naming `what` (and `detail()`); the timer is cleared. */
export function within<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
  detail?: () => unknown,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what} did not finish in ${ms} ms${describeDetail(detail)}`)),
      ms,
    )
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** Closes everything given, each bounded by `ms`, and never throws (for afterAll). */
export async function closeAll(closers: Array<() => Promise<unknown>>, ms = 5000): Promise<void> {
  await Promise.allSettled(closers.map((close) => within(close(), ms, 'close')))
}

/**
 * What keeps the event loop alive, by type (`TCPSocketWrap`, `TCPServerWrap`, `Timeout`, ...),
 * from `process.getActiveResourcesInfo()`.
 */
export function activeResources(): Map<string, number> {
  const counts = new Map<string, number>()
  for (const type of process.getActiveResourcesInfo()) counts.set(type, (counts.get(type) ?? 0) + 1)
  return counts
}

/** The resources alive now and not in `before`, as `TCPSocketWrap x2`; empty when nothing was left open. */
export function leftOpen(before: Map<string, number>, now = activeResources()): string[] {
  const extra: string[] = []
  for (const [type, count] of now) {
    const more = count - (before.get(type) ?? 0)
    if (more > 0) extra.push(`${type} x${more}`)
  }
  return extra
}

/**
 * Waits until every resource opened since `before` is closed, or `withinMs` passed (sockets
 * and servers close a few ticks after `close()` resolves). Returns what is still open.
 */
export async function settle(before: Map<string, number>, withinMs: number): Promise<string[]> {
  const deadline = Date.now() + withinMs
  for (;;) {
    const extra = leftOpen(before)
    if (extra.length === 0 || Date.now() >= deadline) return extra
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

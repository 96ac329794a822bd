/**
 * Runs `run` with a hard time bound. `run` registers what to tear down (a half-open client)
 * through `onAbort`; on timeout that teardown runs and the promise rejects.
 */
export async function bounded<T>(
  timeoutMs: number,
  run: (onAbort: (teardown: () => void) => void) => Promise<T>,
): Promise<T> {
  const teardowns: Array<() => void> = []
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      for (const teardown of teardowns) {
        try {
          teardown()
        } catch {
          // the client is being abandoned; its teardown errors do not matter
        }
      }
      reject(new Error(`no answer within ${timeoutMs} ms`))
    }, timeoutMs)
    timer.unref()
  })
  try {
    return await Promise.race([run((teardown) => teardowns.push(teardown)), timeout])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * What a synchronous call threw, or `undefined` when it returned: for asserting on the error
 * itself (its class, code and fields) and that the call threw at once rather than later.
 */
export function thrown(call: () => unknown): unknown {
  try {
    call()
  } catch (error) {
    return error
  }
  return undefined
}

/** What a promise-returning call rejected with, or `undefined` when it resolved. */
export async function rejection(call: () => Promise<unknown>): Promise<unknown> {
  return call().then(
    () => undefined,
    (error: unknown) => error,
  )
}

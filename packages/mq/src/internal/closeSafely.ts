/** Something amqplib lets us close: a connection (ChannelModel) or a channel. */
interface Closable {
  close(): Promise<void>
  once(event: 'close', listener: () => void): unknown
  off(event: 'close', listener: () => void): unknown
}

/**
 * Closes an amqplib connection or channel without ever hanging. amqplib settles `close()` only
 * when the peer's Close-Ok arrives: if the socket dies while closing (a network cut, a broker
 * restart), the promise never settles. This resolves on `close()`, on the `'close'` event, or
 * after `timeoutMs`, whichever is first; on the timeout a connection's socket is destroyed.
 */
export function closeSafely(target: Closable, timeoutMs = 2000): Promise<void> {
  return new Promise((resolve) => {
    let done = false
    const finish = () => {
      if (done) return
      done = true
      clearTimeout(timer)
      target.off('close', finish)
      resolve()
    }
    const timer = setTimeout(() => {
      // a connection's socket is `connection.stream`; a channel has none (its connection owns it)
      const stream = (target as { connection?: { stream?: { destroy?: () => void } } }).connection
        ?.stream
      if (typeof stream?.destroy === 'function') stream.destroy()
      finish()
    }, timeoutMs)
    timer.unref()
    target.once('close', finish)
    try {
      target.close().then(finish, finish)
    } catch {
      finish()
    }
  })
}

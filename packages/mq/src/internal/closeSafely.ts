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
      // with an error: amqplib learns of a dead socket only from its 'error' or 'end' event, and a
      // plain destroy() emits neither, so the connection would never emit 'close' (and everything
      // waiting for it, our reconnect loop and close() included, would wait forever)
      const stream = (target as { connection?: { stream?: { destroy?: (error?: Error) => void } } })
        .connection?.stream
      if (typeof stream?.destroy === 'function')
        stream.destroy(new Error('the broker did not answer the close within the timeout'))
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

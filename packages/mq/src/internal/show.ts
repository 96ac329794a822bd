/**
 * A value as an error message shows it: at most about `max` characters, a long string cut with its
 * size in bytes, and never a throw (JSON cannot show a bigint or a cycle), so a bad argument always
 * gets the package's typed error, and a huge one does not copy itself into every log line.
 */
export function show(value: unknown, max = 100): string {
  if (typeof value === 'string') {
    return value.length <= max
      ? JSON.stringify(value)
      : `${JSON.stringify(value.slice(0, max))}... (${Buffer.byteLength(value)} bytes)`
  }
  if (typeof value === 'bigint') return 'a bigint'
  let text: string | undefined
  try {
    text = JSON.stringify(value)
  } catch {
    text = undefined
  }
  if (text === undefined) return typeof value === 'object' ? 'an object' : `a ${typeof value}`
  return text.length <= max ? text : `${text.slice(0, max)}...`
}

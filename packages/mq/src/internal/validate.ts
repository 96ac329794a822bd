import { checks, show } from '@ballast/shared'
import { InvalidArgumentError } from '../errors.js'

/** The shared option checks, throwing mq's {@link InvalidArgumentError}. */
export const check = checks(InvalidArgumentError)

/** The same checks for per-call arguments (`invalid argument "<name>": ...`). */
export const checkArgument = checks(InvalidArgumentError, 'argument')

/**
 * A value as an error message shows it (the shared `show()`), cut to about `max` characters: a
 * long string keeps its size in bytes, so a hostile megabyte does not copy itself into every log
 * line.
 */
export function brief(value: unknown, max = 100): string {
  if (typeof value === 'string' && value.length > max) {
    return `${show(value.slice(0, max))}... (${Buffer.byteLength(value)} bytes)`
  }
  const text = show(value)
  return text.length <= max ? text : `${text.slice(0, max)}...`
}

import { checks, merge, show } from '@ballast/shared'
import { InvalidArgumentError } from '../errors.js'

const check = checks(InvalidArgumentError)

/**
 * The options of a framework adapter merged over its defaults (an option given as `undefined`
 * keeps its default) and checked: `onUnavailable` is a function when given.
 */
export function adapterOptions<O extends { onUnavailable?: unknown }>(
  defaults: Readonly<O>,
  options: O | undefined,
): O {
  if (options !== undefined && (options === null || typeof options !== 'object')) {
    throw new InvalidArgumentError(`invalid options: expected an object, got ${show(options)}`)
  }
  const merged = merge(defaults, options) as O
  if (merged.onUnavailable !== undefined) check.func('onUnavailable', merged.onUnavailable)
  return merged
}

import { checks } from '@ballast/shared'
import { InvalidArgumentError } from '../errors.js'

/** The shared checks of options, throwing cache's `InvalidArgumentError`. */
export const option = checks(InvalidArgumentError)

/** The same checks for per-call arguments (`invalid argument "ttl": ...`). */
export const argument = checks(InvalidArgumentError, 'argument')

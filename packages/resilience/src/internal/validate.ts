import { type Checks, checks } from '@ballast/shared'
import { InvalidArgumentError } from '../errors.js'

// Annotated, so a call of `check.invalid()` (which returns `never`) narrows like a `throw`.

/** The shared checks, throwing this package's {@link InvalidArgumentError}: `invalid option "<name>": ...`. */
export const check: Checks = checks(InvalidArgumentError)

/** The same checks for per-call arguments: `invalid argument "<name>": ...`. */
export const checkArgument: Checks = checks(InvalidArgumentError, 'argument')

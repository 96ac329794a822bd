import { checks } from '@ballast/shared'
import { InvalidArgumentError } from '../errors.js'

/** Checks of options, at construction: `invalid option "<name>": expected …, got …`. */
export const option = checks(InvalidArgumentError)

/** Checks of per-call arguments: `invalid argument "<name>": expected …, got …`. */
export const argument = checks(InvalidArgumentError, 'argument')

/** The `{ positive: true }` of a duration check, made once: a per-call check allocates nothing. */
export const POSITIVE: { readonly positive: true } = Object.freeze({ positive: true })

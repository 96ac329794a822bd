import { isLbError } from '@ballast/lb'
import { isResilienceError } from '@ballast/resilience'
import {
  checkProviders,
  checks,
  type Telemetry,
  type TelemetryOptions,
  telemetry,
} from '@ballast/shared'
import { InvalidArgumentError } from '../errors.js'

/** Checks of options, at construction: `invalid option "<name>": expected …, got …`. */
export const option = checks(InvalidArgumentError)

/** Checks of per-call arguments: `invalid argument "<name>": expected …, got …`. */
export const argument = checks(InvalidArgumentError, 'argument')

/** The `{ positive: true }` of a duration check, made once: a per-call check allocates nothing. */
export const POSITIVE: { readonly positive: true } = Object.freeze({ positive: true })

/**
 * Runs a factory of lb or resilience (the ring, the replica balancer, the primary breaker) and turns its
 * `InvalidArgumentError` into this package's, naming the option as the router's
 * (`primaryBreaker.resetTimeout`), with the original as `cause`.
 */
export function adoptInvalidArgument<T>(make: () => T, prefix = ''): T {
  try {
    return make()
  } catch (error) {
    if (
      (isLbError(error) || isResilienceError(error)) &&
      error.code.endsWith('_INVALID_ARGUMENT')
    ) {
      throw new InvalidArgumentError(
        error.message.replace(/^invalid option "/, `invalid option "${prefix}`),
        { cause: error },
      )
    }
    throw error
  }
}

/**
 * Checks the `meterProvider` and `tracerProvider` options (duck-typed: a provider from another
 * copy of `@opentelemetry/api` is as good) and returns the package's meter and tracer from them.
 */
export function checkedTelemetry(options: TelemetryOptions): Telemetry {
  return telemetry('@ballast/sharding', checkProviders(option, options))
}

import { describe, expect, it } from 'vitest'
import { errors, InvalidArgumentError, isShardingError, ShardingError } from '../src/index.js'

describe('ShardingError', () => {
  it('carries a stable code, the cause and whether a retry can help', () => {
    const cause = new Error('socket closed')
    const error = new ShardingError('E_SHARD_TEST', 'it failed', { cause, retryable: true })
    expect(error.code).toBe('E_SHARD_TEST')
    expect(error.cause).toBe(cause)
    expect(error.retryable).toBe(true)
    expect(error).toBeInstanceOf(Error)
  })

  it('is recognised by the guard across copies of the package, and nothing else is', () => {
    const error = new InvalidArgumentError('invalid option "x": expected a number, got "a"')
    expect(isShardingError(error)).toBe(true)
    expect(error.code).toBe('E_SHARD_INVALID_ARGUMENT')
    expect(errors.InvalidArgumentError).toBe(InvalidArgumentError)
    // A structurally identical error from another copy carries the same global brand.
    const foreign = Object.defineProperty(new Error('x'), Symbol.for('ballast.error'), {
      value: '@ballast/sharding',
    })
    expect(isShardingError(foreign)).toBe(true)
    expect(isShardingError(new Error('plain'))).toBe(false)
    expect(isShardingError(null)).toBe(false)
  })
})

/** `E_SHARD_` and the class name without `Error` and a leading package word, in SCREAMING_SNAKE. */
function codeOf(className: string): string {
  const what = className.replace(/Error$/, '').replace(/^(Sharding|Shard)(?=[A-Z])/, '')
  return `E_SHARD_${what.replace(/([a-z])([A-Z])/g, '$1_$2').toUpperCase()}`
}

describe('every error class', () => {
  const cause = new Error('the driver said no')
  const made: Record<string, ShardingError> = {
    InvalidArgumentError: new errors.InvalidArgumentError('bad', { cause }),
    ShardKeyMissingError: new errors.ShardKeyMissingError(undefined, { cause }),
    UnknownShardError: new errors.UnknownShardError('s9', { cause }),
    UnsafeStatementError: new errors.UnsafeStatementError('two statements', { cause }),
    InvalidCausalTokenError: new errors.InvalidCausalTokenError('cut', { cause }),
    ShardUnavailableError: new errors.ShardUnavailableError('s1', 'primary', 'down', { cause }),
    SlotMoveStalledError: new errors.SlotMoveStalledError('s3', 'copy', 600_000, { cause }),
    ShardTimeoutError: new errors.ShardTimeoutError('s1', 500, { cause }),
    ScatterGatherError: new errors.ScatterGatherError([{ shard: 's1', error: new Error('x') }], {
      cause,
    }),
    ShardingClosedError: new errors.ShardingClosedError('shard router', 'query', { cause }),
    ClockMovedBackwardsError: new errors.ClockMovedBackwardsError(5, undefined, { cause }),
    SlotMovedError: new errors.SlotMovedError(17, 's1', { cause }),
    SlotMapUnavailableError: new errors.SlotMapUnavailableError('down', { cause }),
    SlotMapConflictError: new errors.SlotMapConflictError(3, { cause }),
    InvalidSlotMapError: new errors.InvalidSlotMapError('gap at slot 5', { cause }),
    SlotCopyMismatchError: new errors.SlotCopyMismatchError('orders', '3 rows vs 2', { cause }),
    SlotMoveBusyError: new errors.SlotMoveBusyError('s1', 'copy', { cause }),
    ReshardBusyError: new errors.ReshardBusyError(3, 'run 3 is paused', { cause }),
    ReshardStateError: new errors.ReshardStateError('none', 'no run', { cause }),
  }

  it('covers every class of the errors map', () => {
    expect(Object.keys(made).sort()).toEqual(
      Object.keys(errors)
        .filter((name) => name !== 'ShardingError')
        .sort(),
    )
  })

  for (const [name, error] of Object.entries(made)) {
    it(`${name}: code derived from the class name, name, brand, cause`, () => {
      expect(error.code).toBe(codeOf(name))
      expect(error.name).toBe(name)
      expect(error).toBeInstanceOf(errors[name as keyof typeof errors])
      expect(isShardingError(error)).toBe(true)
      expect(error.cause).toBe(cause)
      expect(typeof error.retryable).toBe('boolean')
    })
  }

  it('reads as codes the README lists', () => {
    expect(made.UnknownShardError!.code).toBe('E_SHARD_UNKNOWN_SHARD')
    expect(made.ScatterGatherError!.code).toBe('E_SHARD_SCATTER_GATHER')
    expect(made.ClockMovedBackwardsError!.code).toBe('E_SHARD_CLOCK_MOVED_BACKWARDS')
    expect(made.ShardingClosedError!.retryable).toBe(false)
    expect(made.ShardTimeoutError!.retryable).toBe(true)
    expect(made.SlotMovedError!.code).toBe('E_SHARD_SLOT_MOVED')
    expect(made.SlotMovedError!.retryable).toBe(true)
    expect(made.SlotMapConflictError!.retryable).toBe(true)
    expect(made.InvalidSlotMapError!.retryable).toBe(false)
  })

  it('ScatterGatherError takes the first shard error as its cause when given none', () => {
    const first = new Error('s1 down')
    expect(new errors.ScatterGatherError([{ shard: 's1', error: first }]).cause).toBe(first)
  })
})

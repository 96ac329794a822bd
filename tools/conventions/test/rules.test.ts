import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  ALLOWLIST,
  checkAdapters,
  checkBuiltDeclarations,
  checkDefaults,
  checkDurationExport,
  checkEmitters,
  checkErrors,
  checkEvents,
  checkOptions,
  checkSharedCode,
  checkStats,
  createSurface,
  ERROR_NAMING,
  expectedCode,
  formatViolation,
  hasUnitSuffix,
  isPastTense,
  readPackage,
  type Surface,
  saysTime,
  type Violation,
} from '../src/index.js'

// The checks themselves, on two fixture packages: `widget` breaks every rule, `gadget`
// follows them all.

const fixture = (name: string) => readPackage(join(import.meta.dirname, 'fixtures', name))
const widget = fixture('widget')
const gadget = fixture('gadget')
const load = (file: string) => import(/* @vite-ignore */ pathToFileURL(file).href)
let surface: Surface

beforeAll(() => {
  surface = createSurface([widget, gadget])
}, 180_000)

const lines = (violations: Violation[]) => violations.map((v) => `${v.rule} ${v.symbol}`).sort()

describe('words', () => {
  it('derives codes as CONVENTIONS.md does, dropping Error and a leading package word', () => {
    expect(expectedCode('LoaderTimeoutError', ERROR_NAMING.cache!)).toBe('E_CACHE_LOADER_TIMEOUT')
    expect(expectedCode('L2UnavailableError', ERROR_NAMING.cache!)).toBe('E_CACHE_L2_UNAVAILABLE')
    expect(expectedCode('CacheClosedError', ERROR_NAMING.cache!)).toBe('E_CACHE_CLOSED')
    expect(expectedCode('ShardKeyMissingError', ERROR_NAMING.sharding!)).toBe('E_SHARD_KEY_MISSING')
    expect(expectedCode('ShardingClosedError', ERROR_NAMING.sharding!)).toBe('E_SHARD_CLOSED')
    expect(expectedCode('LbClosedError', ERROR_NAMING.lb!)).toBe('E_LB_CLOSED')
    expect(expectedCode('SessionNotFoundError', ERROR_NAMING.session!)).toBe('E_SESSION_NOT_FOUND')
    expect(expectedCode('InvalidArgumentError', ERROR_NAMING.mq!)).toBe('E_MQ_INVALID_ARGUMENT')
    // a package word only counts as a whole word: Sessionless is not Session + less
    expect(expectedCode('SessionlessError', ERROR_NAMING.session!)).toBe('E_SESSION_SESSIONLESS')
    expect(expectedCode('CacheError', ERROR_NAMING.cache!)).toBeUndefined()
  })

  it('sees a unit at the end of an option name, but not bytes', () => {
    for (const name of [
      'intervalMs',
      'checkPeriodSeconds',
      'ttlSecs',
      'delayMillis',
      'waitMinutes',
    ]) {
      expect(hasUnitSuffix(name), name).toBe(true)
    }
    for (const name of ['interval', 'maxMessageBytes', 'items', 'params', 'terms', 'maxKeys']) {
      expect(hasUnitSuffix(name), name).toBe(false)
    }
  })

  it('knows a time option by its last word', () => {
    for (const name of [
      'timeout',
      'connectTimeout',
      'pollInterval',
      'initialDelay',
      'ttl',
      'lease',
    ]) {
      expect(saysTime(name), name).toBe(true)
    }
    for (const name of ['maxAttempts', 'windowSize', 'timeoutError', 'jitter']) {
      expect(saysTime(name), name).toBe(false)
    }
  })

  it('takes -ed and irregular participles, and phrasal verbs in the past, as past tense', () => {
    const past = [
      'opened',
      'endpoint-added',
      'connection-lost',
      'message-sent',
      'timed-out',
      'fell-back',
      'gave-up',
    ]
    for (const name of past) expect(isPastTense(name), name).toBe(true)
    for (const name of [
      'open',
      'retry',
      'upstream-error',
      'fallback',
      'sample',
      'bus-down',
      'give-up',
    ]) {
      expect(isPastTense(name), name).toBe(false)
    }
  })
})

describe('options', () => {
  it('reports unit suffixes and time options that are not the shared Duration', () => {
    const { violations, takesDurations } = checkOptions(surface, widget)
    expect(takesDurations).toBe(true)
    expect(lines(violations)).toEqual([
      'option-duration WidgetOptions.confirmWindow',
      'option-duration WidgetOptions.retry.maxDelay',
      'option-duration WidgetOptions.timeout',
      'option-duration WidgetOptions.window.duration',
      'option-unit-suffix WidgetOptions.checkPeriodSeconds',
      'option-unit-suffix WidgetOptions.pollIntervalMs',
    ])
    // the message says what to do, and names package, symbol and rule
    const first = violations.find((v) => v.symbol === 'WidgetOptions.pollIntervalMs')!
    expect(formatViolation(first)).toBe(
      'widget: WidgetOptions.pollIntervalMs: option name ends in a unit: name it without the suffix (`pollInterval`) and type it Duration [option-unit-suffix: Durations: no unit in option names]',
    )
  })

  it('requires the shared Duration to be exported when options take durations', () => {
    const { takesDurations } = checkOptions(surface, widget)
    expect(lines(checkDurationExport(surface, widget, takesDurations))).toEqual([
      'duration-export Duration',
    ])
  })

  it('passes a package whose time options are Durations', () => {
    const { violations, takesDurations } = checkOptions(surface, gadget)
    expect(violations).toEqual([])
    expect(checkDurationExport(surface, gadget, takesDurations)).toEqual([])
  })

  it('gives every allowlist entry a reason', () => {
    for (const entry of ALLOWLIST) expect(entry.reason.length, entry.symbol).toBeGreaterThan(20)
  })
})

describe('defaults', () => {
  it('reports options with no DEFAULT_*_OPTIONS, defaults not frozen, fields with no or another @default', async () => {
    const violations = await checkDefaults(surface, widget, load)
    expect(lines(violations)).toEqual([
      'options-default DEFAULT_EXPRESS_RATE_LIMIT_OPTIONS',
      'options-default ExpressRateLimitOptions.limit',
      'options-default WidgetLimitsOptions.maxItems',
      'options-default WidgetOptions',
    ])
    expect(violations.find((v) => v.symbol === 'WidgetLimitsOptions.maxItems')?.message).toBe(
      'says @default 10, but DEFAULT_WIDGET_LIMITS_OPTIONS has 20',
    )
  })

  it('passes frozen defaults whose @default tags match, and leaves error options alone', async () => {
    expect(await checkDefaults(surface, gadget, load)).toEqual([])
  })
})

describe('errors', () => {
  it('reports codes, missing or dropped causes, a retryable closed error and unlisted classes', async () => {
    const violations = await checkErrors(surface, widget, load, {
      prefix: 'WIDGET',
      words: ['Widget'],
    })
    expect(lines(violations)).toEqual([
      'error-cause DropsCauseError',
      'error-cause ItemTooLargeError',
      'error-closed WidgetClosedError',
      'error-code NoItemError',
      'errors-map OrphanError',
    ])
    const code = violations.find((v) => v.rule === 'error-code')!
    expect(code.message).toBe(
      'code is "E_WIDGET_EMPTY", expected "E_WIDGET_NO_ITEM" (rename the code or the class)',
    )
  })

  it('passes a package that follows the rule, deprecated alias included', async () => {
    const naming = { prefix: 'GADGET', words: ['Gadget'] }
    expect(await checkErrors(surface, gadget, load, naming)).toEqual([])
  })
})

describe('events', () => {
  it('reports names that are not kebab-case past tense and payloads that are not event objects', () => {
    expect(lines(checkEvents(surface, widget))).toEqual([
      "event-name WidgetEvents['bus:down']",
      "event-name WidgetEvents['error']",
      "event-name WidgetEvents['open']",
      "event-payload WidgetEvents['count-changed']",
      "event-payload WidgetEvents['item-added']",
      "event-payload WidgetEvents['item-removed']",
      "event-payload WidgetEvents['open']",
    ])
  })

  it('passes past-tense kebab-case events with named event objects', () => {
    expect(checkEvents(surface, gadget)).toEqual([])
  })
})

describe('emitters', () => {
  it('reports an on() that does not return an unsubscribe function, and a missing once() or off()', () => {
    expect(lines(checkEmitters(surface, widget))).toEqual([
      'emitter-api Widget.off',
      'emitter-api Widget.on',
      'emitter-api Widget.once',
    ])
    expect(checkEmitters(surface, gadget)).toEqual([])
  })
})

describe('stats', () => {
  it('reports outcomes counted with nouns, nested ones included, and says the participle', () => {
    const violations = checkStats(surface, widget)
    expect(lines(violations)).toEqual([
      'stats-name Widget.stats().l2.timeouts',
      'stats-name WidgetStats.decodeErrors',
      'stats-name WidgetStats.failures',
    ])
    expect(violations.map((v) => v.message)).toContain(
      'counts an outcome with a noun: name it `decodeFailed`, the past participle',
    )
    expect(checkStats(surface, gadget)).toEqual([])
  })
})

describe('shared code', () => {
  it('reports own copies of the shared helpers and emitter', () => {
    expect(lines(checkSharedCode(surface, widget))).toEqual([
      'shared-code src/index.ts WidgetEmitter',
      'shared-code src/index.ts merge',
      'shared-code src/index.ts show',
    ])
    expect(checkSharedCode(surface, gadget)).toEqual([])
  })
})

describe('adapters', () => {
  it('reports values of a framework subpath not named after the framework', () => {
    expect(lines(checkAdapters(surface, widget))).toEqual([
      'adapter-name @fixture/widget/express rateLimit',
    ])
    expect(checkAdapters(surface, gadget)).toEqual([])
  })
})

describe('built declarations', () => {
  const dirs: string[] = []
  afterAll(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
  })

  /** A package folder with a source file and, optionally, declarations built after it. */
  function built(declarations: string | undefined, { stale = false } = {}) {
    const dir = mkdtempSync(join(tmpdir(), 'conventions-'))
    dirs.push(dir)
    mkdirSync(join(dir, 'src'))
    writeFileSync(
      join(dir, 'package.json'),
      JSON.stringify({ name: '@fixture/built', exports: {} }),
    )
    writeFileSync(join(dir, 'src', 'index.ts'), 'export const x = 1\n')
    utimesSync(join(dir, 'src', 'index.ts'), 1_000_000, 1_000_000)
    if (declarations !== undefined) {
      mkdirSync(join(dir, 'dist'))
      writeFileSync(join(dir, 'dist', 'index.d.ts'), declarations)
      const at = stale ? 999_000 : 1_001_000
      utimesSync(join(dir, 'dist', 'index.d.ts'), at, at)
    }
    return readPackage(dir)
  }

  it('reports each @internal declaration with its file and line', () => {
    const pkg = built(
      [
        'export declare class Broker {',
        '    /** @internal */',
        '    publishEncoded(): void;',
        '}',
      ].join('\n'),
    )
    expect(lines(checkBuiltDeclarations(pkg))).toEqual([
      'no-internal-in-dts dist/index.d.ts:2 publishEncoded(): void;',
    ])
  })

  it('passes declarations with no @internal', () => {
    expect(checkBuiltDeclarations(built('export declare const x = 1;\n'))).toEqual([])
  })

  it('fails when the package is not built, or built before its sources changed', () => {
    expect(checkBuiltDeclarations(built(undefined))[0]?.message).toMatch(/run `pnpm build` first/)
    expect(checkBuiltDeclarations(built('export {}\n', { stale: true }))[0]?.message).toMatch(
      /older than src/,
    )
  })
})

import { pathToFileURL } from 'node:url'
import { beforeAll, describe, expect, it } from 'vitest'
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
  formatViolation,
  isAllowed,
  listPackages,
  type Surface,
  type Violation,
} from '../src/index.js'

// docs/CONVENTIONS.md, checked on every package's public surface (the entry points of its
// package.json `exports`). A failure lists one line per violation: package, symbol, what is
// wrong and the rule. An excuse goes in src/allowlist.ts, with a reason a reviewer accepts.

const packages = listPackages()
let surface: Surface

beforeAll(() => {
  surface = createSurface(packages)
}, 180_000)

/** Every violation found, excused or not, to check that each allowlist entry is still needed. */
const found: Violation[] = []

/** Fails with one line per violation the allowlist does not excuse. */
function expectNone(violations: Violation[]): void {
  found.push(...violations)
  const lines = violations.filter((v) => !isAllowed(v)).map(formatViolation)
  if (lines.length > 0) {
    expect.fail(`${lines.length} violation(s) of docs/CONVENTIONS.md:\n${lines.join('\n')}`)
  }
}

const load = (file: string) => import(/* @vite-ignore */ pathToFileURL(file).href)

it('finds the six packages and their entry points', () => {
  expect(packages.map((p) => p.name)).toEqual([
    'cache',
    'lb',
    'mq',
    'resilience',
    'session',
    'sharding',
  ])
  for (const pkg of packages) expect(pkg.entries.get('.')).toMatch(/src[\\/]index\.ts$/)
})

describe.each(packages)('@ballast/$name', (pkg) => {
  it('names options without a unit and types every time option as the shared Duration', () => {
    const { violations, takesDurations } = checkOptions(surface, pkg)
    const all = [...violations, ...checkDurationExport(surface, pkg, takesDurations)]
    expectNone(all)
  })

  it('exports a frozen DEFAULT_<SUBJECT>_OPTIONS per <Subject>Options, with matching @default tags', async () => {
    expectNone(await checkDefaults(surface, pkg, load))
  })

  it('derives each error code from its class name, with retryable, { cause } and a closed error', async () => {
    expectNone(await checkErrors(surface, pkg, load))
  })

  it('names events in kebab-case and past tense, each with one <Name>Event object', () => {
    expectNone(checkEvents(surface, pkg))
  })

  it('returns an unsubscribe function from on() and once(), and has off()', () => {
    expectNone(checkEmitters(surface, pkg))
  })

  it('names stats outcomes with past participles', () => {
    expectNone(checkStats(surface, pkg))
  })

  it('keeps no copy of a helper or emitter of @ballast/shared', () => {
    expectNone(checkSharedCode(surface, pkg))
  })

  it('names what a framework subpath exports after the framework', () => {
    expectNone(checkAdapters(surface, pkg))
  })

  it('ships nothing marked @internal in its built declarations', () => {
    expectNone(checkBuiltDeclarations(pkg))
  })
})

// Runs after the packages' tests (a file's tests run in order): an entry that excuses nothing
// any more is a hole left in a rule.
it('needs every allowlist entry', () => {
  const unused = ALLOWLIST.filter((a) => !found.some((v) => isAllowed(v, [a])))
  expect(unused.map((a) => `${a.pkg}: ${a.symbol} [${a.rule}]`)).toEqual([])
})

import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { uniqueName } from '../src/index.js'

describe('uniqueName', () => {
  it('is a lower-case identifier of at most 64 characters starting with a letter, for any label', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), (label) => {
        const name = uniqueName(label)
        expect(name).toMatch(/^[a-z][a-z0-9_]*$/)
        expect(name.length).toBeLessThanOrEqual(64)
      }),
    )
  })

  it('keeps a readable label', () => {
    expect(uniqueName('Cache Tags!')).toMatch(/^cache_tags_[a-z0-9]+_[a-z0-9]+$/)
    expect(uniqueName('42')).toMatch(/^t_42_/)
    expect(uniqueName('')).toMatch(/^t_/)
  })

  it('never repeats within a process', () => {
    const names = Array.from({ length: 5000 }, () => uniqueName('same'))
    expect(new Set(names).size).toBe(names.length)
  })
})

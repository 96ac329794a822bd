import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, test } from 'vitest'
import {
  activeResources,
  extractBlocks,
  leftOpen,
  locateError,
  readmeLine,
  settle,
  typecheck,
  useServerAddresses,
  writeExamples,
} from '../src/index.js'

const root = fileURLToPath(new URL('../../../', import.meta.url))

const README = [
  '# pkg', //                                 1
  '```sh', //                                 2
  'npm install pkg', //                       3
  '```', //                                   4
  '```ts', //                                 5
  "import { a } from 'pkg'", //               6
  'a()', //                                   7
  '```', //                                   8
  '- a list item:', //                        9
  '  ```typescript compile-only', //          10
  '  type T = string', //                     11
  '  ```', //                                 12
  '````md', //                                13
  '```ts', //                                 14
  'not a block: inside a longer fence', //    15
  '```', //                                   16
  '````', //                                  17
  '```js', //                                 18
  'console.log(1)', //                        19
  '```', //                                   20
].join('\n')

describe('extractBlocks', () => {
  const blocks = extractBlocks('packages/pkg/README.md', README)

  test('finds ts, typescript and js blocks with the line of their fence, and no other language', () => {
    expect(blocks.map(({ line, extension }) => ({ line, extension }))).toEqual([
      { line: 5, extension: 'ts' },
      { line: 10, extension: 'ts' },
      { line: 18, extension: 'mjs' },
    ])
    expect(blocks[0]?.code).toBe("import { a } from 'pkg'\na()\n")
  })

  test('reads the compile-only marker of the info string', () => {
    expect(blocks.map((block) => block.compileOnly)).toEqual([false, true, false])
  })

  test('a block inside a longer fence is not an example', () => {
    expect(blocks.some((block) => block.code.includes('not a block'))).toBe(false)
  })
})

describe('writeExamples', () => {
  const dir = mkdtempSync(join(tmpdir(), 'readme-examples-'))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  test('writes each block line for line, named after its README and line', () => {
    const [first] = writeExamples(extractBlocks('packages/pkg/README.md', README), dir)
    expect(first?.name).toBe('packages/pkg/README.md:5')
    expect(first?.file).toBe(join(dir, 'packages-pkg-readme-5.ts'))
    expect(readFileSync(first?.file ?? '', 'utf8').split('\n')[1]).toBe('a()')
    // line 2 of the file is line 7 of the README
    expect(first && readmeLine(first, 2)).toBe(7)
  })
})

describe('left-open resources', () => {
  test('a server still listening is reported, and no longer once closed', async () => {
    const before = activeResources()
    const server = createServer()
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    expect(leftOpen(before).join()).toMatch(/TCPServerWrap x1/)
    await new Promise((resolve) => server.close(resolve))
    expect(await settle(before, 2_000)).toEqual([])
  })
})

describe('typecheck', () => {
  // inside the package, where @types/node resolves
  const dir = mkdtempSync(fileURLToPath(new URL('../.tmp-', import.meta.url)))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  test('names the README, line and column of each error, and passes a correct block', () => {
    const markdown = [
      '# pkg', //                                       1
      '```ts', //                                       2
      'const fine: number = 1', //                      3
      'console.log(fine)', //                           4
      '```', //                                         5
      '```ts', //                                       6
      'const total: number = 1', //                     7
      'const label: string = total', //                 8
      'console.log(label, missing)', //                 9
      '```', //                                         10
    ].join('\n')
    const tsconfig = join(dir, 'tsconfig.json')
    writeFileSync(
      tsconfig,
      JSON.stringify({ extends: join(root, 'tsconfig.base.json'), include: [] }),
    )
    const [good, bad] = writeExamples(
      extractBlocks('packages/pkg/README.md', markdown),
      join(dir, 'generated'),
    )
    if (!good || !bad) throw new Error('expected two blocks')
    const errors = typecheck([good, bad], tsconfig)
    expect(errors.get(good)).toEqual([])
    expect(errors.get(bad)).toEqual([
      expect.stringMatching(/^packages\/pkg\/README\.md:8:7 - TS2322: /),
      expect.stringMatching(/^packages\/pkg\/README\.md:9:20 - TS2304: Cannot find name 'missing'/),
    ])
  })
})

describe('locateError', () => {
  test("names the block and turns the generated file's lines into the README's", () => {
    const example = {
      file: '/repo/tools/readme-examples/generated/run-1/packages-pkg-readme-20.ts',
      line: 20,
      name: 'packages/pkg/README.md:20',
      readme: 'packages/pkg/README.md',
    }
    const error = new Error('connect ECONNREFUSED')
    error.stack = `Error: connect ECONNREFUSED\n    at file://${example.file}:3:9\n    at elsewhere.js:1:1`
    const located = locateError(error, example)
    expect(located).toBe(error)
    expect(located.message).toBe('packages/pkg/README.md:20: connect ECONNREFUSED')
    expect(located.stack).toContain('at packages/pkg/README.md:23\n')
    expect(located.stack).toContain('at elsewhere.js:1:1')
  })

  test('a thrown value that is not an Error becomes one', () => {
    const example = { file: '/x.ts', line: 1, name: 'README.md:1', readme: 'README.md' }
    expect(locateError('boom', example).message).toBe('README.md:1: boom')
  })
})

describe('useServerAddresses', () => {
  const code = "new Redis('redis://127.0.0.1:6379')\nconnect('amqp://guest:guest@127.0.0.1:5672')\n"

  test('an address the environment gives replaces the local one the example names', () => {
    expect(useServerAddresses(code, { REDIS_URL: 'redis://10.0.0.5:32768' })).toBe(
      "new Redis('redis://10.0.0.5:32768')\nconnect('amqp://guest:guest@127.0.0.1:5672')\n",
    )
  })

  test('without one, the code is left as written', () => {
    expect(useServerAddresses(code, {})).toBe(code)
  })
})

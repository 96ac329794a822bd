import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/** The languages of the fenced blocks that are programs (the info string's first word): each is typechecked and run. */
export const LANGUAGES: Readonly<Record<string, 'ts' | 'mjs'>> = {
  ts: 'ts',
  typescript: 'ts',
  js: 'mjs',
  javascript: 'mjs',
  mjs: 'mjs',
}

/** The info-string word that marks a block as typechecked but not run (```ts compile-only). */
export const COMPILE_ONLY = 'compile-only'

/** One fenced code block of a README. */
export interface Block {
  /** The README's path from the repo root, with forward slashes: `packages/cache/README.md`. */
  readme: string
  /** The 1-based line of the opening fence; the block's first line of code is `line + 1`. */
  line: number
  /** The extension of the generated file: `ts` or `mjs`. */
  extension: 'ts' | 'mjs'
  /** Typechecked but not run. */
  compileOnly: boolean
  code: string
}

/** A block written to a file of its own. */
export interface Example extends Block {
  /** The generated file's absolute path. */
  file: string
  /** `packages/cache/README.md:15`: how tests and failures name the block. */
  name: string
}

/** The READMEs whose blocks are examples: README.md, packages/<name>/README.md, examples/shop/README.md. */
export function readmePaths(root: string): string[] {
  const packages = readdirSync(join(root, 'packages'), { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .map((entry) => `packages/${entry.name}/README.md`)
    .sort()
  return ['README.md', ...packages, 'examples/shop/README.md'].filter((path) =>
    exists(join(root, path)),
  )
}

function exists(path: string): boolean {
  try {
    readFileSync(path)
    return true
  } catch {
    return false
  }
}

const OPENING = /^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)\s*(.*)$/

/**
 * The TypeScript and JavaScript blocks of a Markdown text (```ts, ```typescript, ```js, ```javascript, ```mjs),
 * with the line of each opening fence. Blocks of other languages are passed over.
 */
export function extractBlocks(readme: string, markdown: string): Block[] {
  const lines = markdown.split(/\r?\n/)
  const blocks: Block[] = []
  for (let index = 0; index < lines.length; index++) {
    const opening = OPENING.exec(lines[index] ?? '')
    if (!opening) continue
    const fence = opening[1] ?? '```'
    const language = (opening[2] ?? '').toLowerCase()
    const words = (opening[3] ?? '').split(/\s+/).filter(Boolean)
    const body: string[] = []
    let end = index + 1
    for (; end < lines.length; end++) {
      const line = lines[end] ?? ''
      if (
        line.trim().startsWith(fence[0]!.repeat(fence.length)) &&
        line.trim().replaceAll(fence[0]!, '') === ''
      )
        break
      body.push(line)
    }
    const extension = LANGUAGES[language]
    if (extension) {
      blocks.push({
        readme,
        line: index + 1,
        extension,
        compileOnly: words.includes(COMPILE_ONLY),
        code: `${body.join('\n')}\n`,
      })
    }
    index = end
  }
  return blocks
}

/** Every example block of every README under `root`. */
export function findBlocks(root: string): Block[] {
  return readmePaths(root).flatMap((readme) =>
    extractBlocks(readme, readFileSync(join(root, readme), 'utf8')),
  )
}

/**
 * Writes each block to `<outDir>/<readme>-<line>.<ts|mjs>`, line for line, so line `n` of the
 * file is line `block.line + n` of the README. `outDir` is emptied first. `rewrite` may change
 * the code on its way to the file (say, a server address).
 */
export function writeExamples(
  blocks: Block[],
  outDir: string,
  rewrite: (code: string) => string = (code) => code,
): Example[] {
  rmSync(outDir, { recursive: true, force: true })
  mkdirSync(outDir, { recursive: true })
  return blocks.map((block) => {
    const stem = block.readme
      .replace(/\.md$/i, '')
      .replace(/[^A-Za-z0-9]+/g, '-')
      .toLowerCase()
    const file = join(outDir, `${stem}-${block.line}.${block.extension}`)
    writeFileSync(file, rewrite(block.code))
    return { ...block, file, name: `${block.readme}:${block.line}` }
  })
}

/** The README line that line `generatedLine` (1-based) of an example's file came from. */
export function readmeLine(example: Pick<Example, 'line'>, generatedLine: number): number {
  return example.line + generatedLine
}

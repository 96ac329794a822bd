import { type Example, readmeLine } from './extract.js'

/**
 * The error an example threw, told in the README's terms: the message starts with the block's
 * `<README>:<line>`, and every `<generated file>:<line>:<column>` of the stack becomes the
 * README's path and line.
 */
export function locateError(
  error: unknown,
  example: Pick<Example, 'file' | 'line' | 'name' | 'readme'>,
): Error {
  const located = error instanceof Error ? error : new Error(String(error))
  const file = example.file.replaceAll('\\', '/')
  const frame = new RegExp(`(?:file://)?${escapeRegExp(file)}:(\\d+)(?::\\d+)?`, 'g')
  located.message = `${example.name}: ${located.message}`
  if (located.stack) {
    located.stack = located.stack.replace(
      frame,
      (_match, line: string) => `${example.readme}:${readmeLine(example, Number(line))}`,
    )
  }
  return located
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

import { defineConfig, type Options } from 'tsup'

/** The build every package uses: ESM and CommonJS with types for each, for Node 22+. */
export function ballastTsup(entry: string[], overrides: Options = {}) {
  return defineConfig({
    entry,
    format: ['esm', 'cjs'],
    dts: true,
    clean: true,
    sourcemap: true,
    target: 'node22',
    platform: 'node',
    splitting: true,
    treeshake: true,
    ...overrides,
  })
}

import { fileURLToPath } from 'node:url'
import { defineConfig, type Options } from 'tsup'

const SHARED = fileURLToPath(new URL('./tools/shared/src/index.ts', import.meta.url))

/**
 * The build every package uses: ESM and CommonJS with types for each, for Node 22+, with the
 * private `@ballast/shared` bundled in.
 */
export function ballastTsup(entry: string[], overrides: Options = {}) {
  return defineConfig({
    entry,
    format: ['esm', 'cjs'],
    // The declarations inline @ballast/shared's types too (Duration, Listener): mapped to its
    // source by path, the package is not an external library the declaration bundler keeps.
    dts: { compilerOptions: { paths: { '@ballast/shared': [SHARED] } } },
    clean: true,
    sourcemap: true,
    target: 'node22',
    platform: 'node',
    splitting: true,
    treeshake: true,
    // @ballast/shared is private: bundle it, so users see no extra ballast dependency.
    noExternal: ['@ballast/shared'],
    ...overrides,
  })
}

import { execFile } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

// What a user's install sees, which the workspace links hide: every package is packed with
// `pnpm pack`, the tarballs are installed with npm into a fresh project outside the
// workspace, and there each entry of each exports map is loaded through `import` and
// `require` and typechecked under `moduleResolution` node16 and bundler.
// It packs `dist`: after changing a package, `pnpm build` first (a missing dist is built here).

const root = fileURLToPath(new URL('../../../', import.meta.url))
const tsc = join(root, 'node_modules/typescript/bin/tsc')

interface Manifest {
  name: string
  version: string
  private?: boolean
  exports: Record<string, unknown>
  dependencies?: Record<string, string>
  peerDependencies?: Record<string, string>
  devDependencies?: Record<string, string>
}

interface Entry {
  /** What a user writes: `@ballast/session/express`. */
  specifier: string
  /** The files the `import` and `require` conditions point at, relative to the package. */
  files: string[]
}

function readManifest(file: string): Manifest {
  return JSON.parse(readFileSync(file, 'utf8')) as Manifest
}

/** Every string target under a condition object, so a missing dist file can be spotted. */
function targets(value: unknown): string[] {
  if (typeof value === 'string') return [value]
  if (value === null || typeof value !== 'object') return []
  return Object.entries(value)
    .filter(([condition]) => condition !== '@ballast/source')
    .flatMap(([, nested]) => targets(nested))
}

const packages = readdirSync(join(root, 'packages'))
  .map((folder) => join(root, 'packages', folder))
  .filter((dir) => existsSync(join(dir, 'package.json')))
  .map((dir) => ({ dir, manifest: readManifest(join(dir, 'package.json')) }))
  .filter(({ manifest }) => manifest.private !== true)

/** Every open entry of every exports map (closed `./internal/*` and `./package.json` left out). */
const entries: Entry[] = packages.flatMap(({ manifest }) =>
  Object.entries(manifest.exports)
    .filter(([key, value]) => value !== null && key !== './package.json' && !key.includes('*'))
    .map(([key, value]) => ({
      specifier: key === '.' ? manifest.name : `${manifest.name}${key.slice(1)}`,
      files: targets(value),
    })),
)

interface Run {
  code: number
  stdout: string
  stderr: string
}

function run(command: string, args: string[], cwd: string, timeout = 240_000): Promise<Run> {
  // A user's shell, not pnpm's: the `npm_*` variables a `pnpm test` sets are left out.
  const env = Object.fromEntries(
    Object.entries(process.env).filter(
      ([key]) =>
        !key.startsWith('npm_') ||
        key === 'npm_config_registry' ||
        key === 'npm_config_cache' ||
        key === 'npm_config_userconfig',
    ),
  )
  return new Promise((resolve) => {
    execFile(
      command,
      args,
      { cwd, env, timeout, maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1
        resolve({ code, stdout, stderr: error !== null && stderr === '' ? error.message : stderr })
      },
    )
  })
}

async function mustRun(what: string, command: string, args: string[], cwd: string) {
  const result = await run(command, args, cwd)
  if (result.code !== 0) {
    throw new Error(`${what} failed (exit ${result.code}):\n${result.stderr}\n${result.stdout}`)
  }
  return result
}

/** The package name a peer's types come from when it ships none (`@types/express`). */
function typesPackage(name: string) {
  return `@types/${name.replace(/^@([^/]+)\/(.+)$/, '$1__$2')}`
}

/** The installed project's dependencies: the tarballs, and the peers at the versions we test. */
function projectDependencies(tarballs: Map<string, string>) {
  const dependencies: Record<string, string> = {}
  for (const [name, tarball] of tarballs) dependencies[name] = `file:${tarball}`
  for (const { manifest } of packages) {
    for (const [peer, range] of Object.entries(manifest.peerDependencies ?? {})) {
      dependencies[peer] ??= manifest.devDependencies?.[peer] ?? range
      const types = typesPackage(peer)
      const typesRange = manifest.devDependencies?.[types]
      if (typesRange !== undefined) dependencies[types] ??= typesRange
    }
  }
  const nodeTypes = readManifest(join(root, 'package.json')).devDependencies?.['@types/node']
  dependencies['@types/node'] = nodeTypes ?? '*'
  return dependencies
}

let workdir = ''
let project = ''
/** The runtime names each entry exports through `import`, filled by the import tests. */
const importedNames = new Map<string, string[]>()

beforeAll(async () => {
  const unbuilt = packages.filter(({ dir, manifest }) =>
    Object.values(manifest.exports).some((value) =>
      targets(value).some((file) => !existsSync(join(dir, file))),
    ),
  )
  if (unbuilt.length > 0) {
    const filters = unbuilt.flatMap(({ manifest }) => ['--filter', `${manifest.name}...`])
    await mustRun('pnpm build of a package without dist', 'pnpm', [...filters, 'build'], root)
  }

  workdir = await mkdtemp(join(tmpdir(), 'ballast-packed-'))
  const tarballDir = join(workdir, 'tarballs')
  project = join(workdir, 'project')
  await mkdir(project, { recursive: true })

  const tarballs = new Map<string, string>()
  for (const { dir, manifest } of packages) {
    await mustRun(
      `pnpm pack of ${manifest.name}`,
      'pnpm',
      ['pack', '--pack-destination', tarballDir],
      dir,
    )
    const file = `${manifest.name.replace(/^@/, '').replace('/', '-')}-${manifest.version}.tgz`
    if (!existsSync(join(tarballDir, file))) {
      throw new Error(`pnpm pack of ${manifest.name} wrote no ${file} in ${tarballDir}`)
    }
    tarballs.set(manifest.name, join(tarballDir, file))
  }

  const dependencies = projectDependencies(tarballs)
  // The overrides make a package's dependency on another ballast package (`workspace:^`,
  // rewritten by pnpm pack to a version range) resolve to its tarball, not to the registry.
  const overrides = Object.fromEntries([...tarballs].map(([name, file]) => [name, `file:${file}`]))
  await writeFile(
    join(project, 'package.json'),
    `${JSON.stringify({ name: 'ballast-packed-check', private: true, dependencies, overrides }, null, 2)}\n`,
  )
  await mustRun(
    'npm install of the tarballs',
    'npm',
    ['install', '--no-audit', '--no-fund', '--loglevel=error', '--prefer-offline'],
    project,
  )
}, 600_000)

afterAll(async () => {
  if (workdir !== '') await rm(workdir, { recursive: true, force: true })
})

describe('the packed packages, installed with npm outside the workspace', () => {
  describe.each(entries)('$specifier', ({ specifier }) => {
    it('loads through import, with named exports', async () => {
      const source = `const m = await import(${JSON.stringify(specifier)}); console.log(JSON.stringify(Object.keys(m).sort()))`
      const result = await run(process.execPath, ['--input-type=module', '-e', source], project)
      expect(result.code, `import('${specifier}') failed:\n${result.stderr}`).toBe(0)
      const names = JSON.parse(result.stdout) as string[]
      expect(names.length, `import('${specifier}') has no named exports`).toBeGreaterThan(0)
      importedNames.set(specifier, names)
    })

    it('loads through require, with the same named exports as import', async () => {
      const source = `console.log(JSON.stringify(Object.keys(require(${JSON.stringify(specifier)})).sort()))`
      const result = await run(process.execPath, ['-e', source], project)
      expect(result.code, `require('${specifier}') failed:\n${result.stderr}`).toBe(0)
      const names = JSON.parse(result.stdout) as string[]
      expect(names.length, `require('${specifier}') has no named exports`).toBeGreaterThan(0)
      const imported = importedNames.get(specifier)
      if (imported !== undefined) {
        const onlyImport = imported.filter((name) => !names.includes(name))
        const onlyRequire = names.filter((name) => !imported.includes(name))
        expect({ onlyImport, onlyRequire }, `require('${specifier}') and import differ`).toEqual({
          onlyImport: [],
          onlyRequire: [],
        })
      }
    })
  })

  /** A file that imports every runtime export of every entry by name and uses each. */
  function usingEverything() {
    const imports: string[] = []
    const uses: string[] = []
    entries.forEach(({ specifier }, index) => {
      const names = importedNames.get(specifier) ?? []
      const aliased = names.map((name) => `${name} as e${index}_${name}`)
      imports.push(`import { ${aliased.join(', ')} } from '${specifier}'`)
      uses.push(...names.map((name) => `e${index}_${name}`))
    })
    return `${imports.join('\n')}\n\nexport const everything: unknown[] = [\n  ${uses.join(',\n  ')},\n]\n`
  }

  async function typecheck(mode: string, compilerOptions: object, files: Record<string, string>) {
    for (const [file, text] of Object.entries(files)) await writeFile(join(project, file), text)
    const config = `tsconfig.${mode}.json`
    await writeFile(
      join(project, config),
      JSON.stringify({
        compilerOptions: {
          ...compilerOptions,
          target: 'es2022',
          strict: true,
          noEmit: true,
          skipLibCheck: false,
          types: ['node'],
        },
        files: Object.keys(files),
      }),
    )
    const result = await run(process.execPath, [tsc, '-p', config], project)
    const output = `${result.stdout}${result.stderr}`
    const errors = output.split(/\n(?=\S)/).filter((block) => /error TS\d+/.test(block))
    expect(errors.length > 0 || result.code === 0, `tsc did not run:\n${output}`).toBe(true)
    // Errors in a third party's own declarations (ioredis 6 imports the untyped
    // `redis-errors`) are theirs, and a user's `skipLibCheck` hides them; ours are not.
    const ours = errors.filter(
      (block) => !block.startsWith('node_modules/') || block.startsWith('node_modules/@ballast/'),
    )
    expect(ours, `tsc with moduleResolution ${mode}`).toEqual([])
  }

  it('typechecks a file using every entry with moduleResolution node16 (ESM and CommonJS)', async () => {
    const source = usingEverything()
    await typecheck(
      'node16',
      { module: 'node16', moduleResolution: 'node16' },
      // .mts resolves through the `import` condition (.d.ts), .cts through `require` (.d.cts).
      { 'everything.mts': source, 'everything.cts': source },
    )
  }, 180_000)

  it('typechecks a file using every entry with moduleResolution bundler', async () => {
    await typecheck(
      'bundler',
      { module: 'esnext', moduleResolution: 'bundler' },
      { 'everything.ts': usingEverything() },
    )
  }, 180_000)
})

import ts from 'typescript'
import { type Example, readmeLine } from './extract.js'

/**
 * Typechecks the examples' files as one program with the compiler options of `tsconfigPath`
 * (the repo's strict settings, `@ballast/*` resolved to the packages' source). Returns, for
 * each example, its errors as `README.md:line:column - TSxxxx: message`. Errors inside the
 * packages' sources are left to the repo's typecheck.
 */
export function typecheck(examples: Example[], tsconfigPath: string): Map<Example, string[]> {
  const config = ts.getParsedCommandLineOfConfigFile(
    tsconfigPath,
    {},
    {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: (diagnostic) => {
        throw new Error(ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n'))
      },
    },
  )
  if (!config) throw new Error(`cannot read ${tsconfigPath}`)
  const program = ts.createProgram({
    rootNames: examples.map((example) => example.file),
    options: { ...config.options, noEmit: true },
  })
  const errors = new Map<Example, string[]>()
  // Only the examples' own files are checked: the packages' sources are the root typecheck's.
  const general = [...program.getOptionsDiagnostics(), ...program.getGlobalDiagnostics()].map(
    (diagnostic) =>
      `TS${diagnostic.code}: ${ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n')}`,
  )
  for (const example of examples) {
    const source = program.getSourceFile(example.file)
    if (!source) {
      errors.set(example, [`${example.name}: ${example.file} is not in the program`])
      continue
    }
    const diagnostics = [
      ...program.getSyntacticDiagnostics(source),
      ...program.getSemanticDiagnostics(source),
    ]
    errors.set(example, [
      ...general,
      ...diagnostics.map((diagnostic) => {
        const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n')
        const { line, character } = source.getLineAndCharacterOfPosition(diagnostic.start ?? 0)
        return `${example.readme}:${readmeLine(example, line + 1)}:${character + 1} - TS${diagnostic.code}: ${message}`
      }),
    ])
  }
  return errors
}

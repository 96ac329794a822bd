#!/usr/bin/env node
// `ballast-reshard`: the operator's command for online resharding (see the README's runbook).
import { runReshardCli } from './reshardCli.js'

void runReshardCli(process.argv.slice(2), {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  onInterrupt: (pause) => {
    const stop = () => {
      process.stderr.write('ballast-reshard: pausing the run (the step in progress ends first)\n')
      pause()
    }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  },
}).then((code) => {
  process.exitCode = code
})

// Sums vitest's JSON reports (one per Node version) into the plain closing line CI reads:
// "N passed, N failed" (with ", N skipped" when any were).
import { readFileSync } from 'node:fs'

let passed = 0
let failed = 0
let skipped = 0
for (const file of process.argv.slice(2)) {
  let report
  try {
    report = JSON.parse(readFileSync(file, 'utf8'))
  } catch {
    console.log(`summary: ${file} missing or unreadable (the run did not finish)`)
    failed++
    continue
  }
  const label = file.replace(/.*\//, '').replace('.json', '')
  console.log(
    `summary: ${label}: ${report.numPassedTests} passed, ${report.numFailedTests} failed, ${report.numPendingTests + report.numTodoTests} skipped, in ${report.numTotalTestSuites} suites`,
  )
  passed += report.numPassedTests
  failed += report.numFailedTests
  skipped += report.numPendingTests + report.numTodoTests
}
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`)

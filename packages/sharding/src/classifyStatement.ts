/**
 * Where a statement may run: `read` on a replica; `locking-read`, `write` and `unknown` only on
 * the primary.
 */
export type StatementKind = 'read' | 'locking-read' | 'write' | 'unknown'

/** What {@link classifyStatement} found in a statement. */
export interface StatementClass {
  /** Where the statement may run; anything but `read` goes to the primary. */
  kind: StatementKind
  /** Whether the text holds more than one statement (a `;` followed by more SQL). */
  multi: boolean
  /** Whether the outermost query has a `LIMIT` clause. */
  hasLimit: boolean
  /**
   * The statement's operation, as telemetry names it (`db.operation.name`): its first keyword
   * (`SELECT`, `INSERT`, `START TRANSACTION`), or `''` when that is not a known statement
   * keyword, so it never carries other text of the statement.
   */
  operation: string
  /** Why the statement is not a plain read, for logs and errors; empty for reads. */
  reason: string
}

const READ_STARTS = new Set(['SELECT', 'WITH', 'VALUES'])
const WRITE_STARTS = new Set([
  'INSERT',
  'UPDATE',
  'DELETE',
  'REPLACE',
  'CREATE',
  'DROP',
  'ALTER',
  'TRUNCATE',
  'RENAME',
  'LOAD',
  'CALL',
  'DO',
  'SET',
  'GRANT',
  'REVOKE',
  'LOCK',
  'UNLOCK',
  'START',
  'BEGIN',
  'COMMIT',
  'ROLLBACK',
  'SAVEPOINT',
  'RELEASE',
  'XA',
  'HANDLER',
  'OPTIMIZE',
  'ANALYZE',
  'REPAIR',
  'FLUSH',
  'KILL',
  'PURGE',
  'RESET',
  'INSTALL',
  'UNINSTALL',
  'PREPARE',
  'EXECUTE',
  'DEALLOCATE',
])

/** First keywords telemetry may name an operation by: the statements above and the read-only `SHOW`, `EXPLAIN`, `DESCRIBE`. */
const OPERATIONS = new Set([...READ_STARTS, ...WRITE_STARTS, 'SHOW', 'EXPLAIN', 'DESCRIBE'])
/**
 * Words that, inside a SELECT or WITH, make it a write (`WITH x AS (…) DELETE …`,
 * `SELECT … INTO OUTFILE`): such a statement never goes to a replica, even with `use: 'replica'`.
 * `INSERT(…)` and `REPLACE(…)` are also string functions: directly followed by `(`, they are not.
 */
const WRITE_IN_READ = new Set([
  'INTO',
  'INSERT',
  'UPDATE',
  'DELETE',
  'REPLACE',
  'CREATE',
  'DROP',
  'ALTER',
  'TRUNCATE',
])
/** Words that, inside a SELECT, mean it changes data or depends on the session it runs in. */
const UNSAFE_IN_READ = new Set([
  ...WRITE_IN_READ,
  'SET',
  'GET_LOCK',
  'RELEASE_LOCK',
  'RELEASE_ALL_LOCKS',
  'IS_USED_LOCK',
  'IS_FREE_LOCK',
  'LAST_INSERT_ID',
  'NEXTVAL',
  'LASTVAL',
  'SETVAL',
  'NEXT',
  'PREVIOUS',
  'FOUND_ROWS',
  'ROW_COUNT',
  'MASTER_GTID_WAIT',
  'MASTER_POS_WAIT',
  'LOAD_FILE',
])

function isWordChar(c: number): boolean {
  return (
    (c >= 48 && c <= 57) ||
    (c >= 65 && c <= 90) ||
    (c >= 97 && c <= 122) ||
    c === 95 ||
    c === 36 ||
    c > 127
  )
}

/**
 * Classifies one SQL statement for read/write splitting. Conservative by design: only a
 * `SELECT` (or `WITH … SELECT`, `VALUES`) with no locking clause (`FOR UPDATE`,
 * `LOCK IN SHARE MODE`, `FOR SHARE`), no `INTO`, no user-variable assignment, no session
 * variables and no function with side effects or session state (`GET_LOCK`, `LAST_INSERT_ID`,
 * `NEXTVAL`, …) is a `read`. A read-shaped statement that may write (`WITH x AS (…) DELETE …`,
 * `SELECT … INTO`, any executable comment `/*! … *\/`) is a `write`, so even `use: 'replica'`
 * keeps it on the primary; anything else it is unsure of is `unknown` and goes to the primary.
 * Strings, quoted identifiers and comments are skipped as MariaDB skips them (blanks include
 * `\v`, `--` plus any control character opens a comment, a NUL byte ends one), so words inside
 * them do not count.
 *
 * @example
 * ```ts
 * classifyStatement('SELECT * FROM orders WHERE user_id = ?').kind // 'read'
 * classifyStatement('SELECT * FROM orders WHERE id = ? FOR UPDATE').kind // 'locking-read'
 * classifyStatement('INSERT INTO orders (id) VALUES (?)').kind // 'write'
 * ```
 */
export function classifyStatement(sql: string): StatementClass {
  const cached = cache.get(sql)
  if (cached !== undefined) return cached
  const result = scan(sql)
  if (cache.size >= CACHE_LIMIT) cache.clear()
  cache.set(sql, result)
  return result
}

const CACHE_LIMIT = 2048
const cache = new Map<string, StatementClass>()

function scan(sql: string): StatementClass {
  const n = sql.length
  let i = 0
  let depth = 0
  let first: string | undefined
  let prev = ''
  let prev2 = ''
  let locking = false
  let unsafe = ''
  let writes = ''
  let multi = false
  let hasLimit = false
  let ended = false
  while (i < n) {
    const c = sql.charCodeAt(i)
    // whitespace
    if (isBlank(c)) {
      i++
      continue
    }
    // comments
    if (c === 47 && sql.charCodeAt(i + 1) === 42) {
      // /*! ... */ and /*M! ... */ are executed by MariaDB: they may hold anything, a write too.
      if (isExecutableComment(sql, i)) writes ||= 'executable comment'

      const end = sql.indexOf('*/', i + 2)
      i = end === -1 ? n : end + 2
      continue
    }
    if (c === 35 || (c === 45 && sql.charCodeAt(i + 1) === 45 && isSpaceOrEnd(sql, i + 2))) {
      i = lineCommentEnd(sql, i)
      continue
    }
    if (ended) {
      multi = true
      break
    }
    // strings and quoted identifiers
    if (c === 39 || c === 34 || c === 96) {
      i = skipQuoted(sql, i, c)
      prev2 = prev
      prev = c === 96 ? '`' : "'"
      if (first === undefined) first = prev
      continue
    }
    if (c === 59) {
      ended = true
      i++
      continue
    }
    if (c === 40) {
      depth++
      i++
      if (first === undefined) first = '('
      continue
    }
    if (c === 41) {
      depth--
      i++
      continue
    }
    if (c === 64 && sql.charCodeAt(i + 1) === 64) {
      unsafe ||= 'session variable'
      i += 2
      continue
    }
    if (c === 58 && sql.charCodeAt(i + 1) === 61) {
      unsafe ||= 'variable assignment'
      i += 2
      continue
    }
    if (isWordChar(c)) {
      let j = i + 1
      while (j < n && isWordChar(sql.charCodeAt(j))) j++
      const word = sql.slice(i, j).toUpperCase()
      i = j
      if (first === undefined || first === '(') {
        if (first === undefined || READ_STARTS.has(word)) first = word
      }
      if (word === 'UPDATE' && prev === 'FOR') locking = true
      else if (word === 'SHARE' && ((prev === 'IN' && prev2 === 'LOCK') || prev === 'FOR'))
        locking = true
      else if (UNSAFE_IN_READ.has(word)) {
        unsafe ||= word
        if (
          WRITE_IN_READ.has(word) &&
          !((word === 'INSERT' || word === 'REPLACE') && sql.charCodeAt(i) === 40)
        )
          writes ||= word
      }
      if (word === 'LIMIT' && depth === 0) hasLimit = true
      prev2 = prev
      prev = word
      continue
    }
    // any other punctuation
    prev2 = prev
    prev = sql[i]!
    i++
  }
  const word = first ?? ''
  const operation = word === 'START' ? 'START TRANSACTION' : OPERATIONS.has(word) ? word : ''
  const found = (kind: StatementKind, reason: string): StatementClass => ({
    kind,
    multi,
    hasLimit,
    reason,
    operation,
  })
  if (writes !== '' && !multi) return found('write', writes)
  if (READ_STARTS.has(word)) {
    if (locking) return found('locking-read', 'locking read')
    if (unsafe !== '') return found('unknown', unsafe)
    if (multi) return found('unknown', 'several statements')
    return found('read', '')
  }
  if (WRITE_STARTS.has(word)) return found('write', word)
  return found('unknown', word === '' ? 'empty statement' : word)
}

/**
 * The statement without what may follow its last token: blanks, `;` and comments (`-- …`,
 * `# …`, `/* … *\/`; executable `/*! … *\/` comments are SQL and stay). Text appended after it
 * (a `LIMIT`, a second statement) is then never inside a trailing comment.
 */
export function statementBody(sql: string): string {
  const n = sql.length
  let i = 0
  let end = 0
  while (i < n) {
    const c = sql.charCodeAt(i)
    if (isBlank(c) || c === 59) {
      i++
      continue
    }
    if (c === 47 && sql.charCodeAt(i + 1) === 42) {
      const close = sql.indexOf('*/', i + 2)
      const after = close === -1 ? n : close + 2
      if (isExecutableComment(sql, i)) end = after
      i = after
      continue
    }
    if (c === 35 || (c === 45 && sql.charCodeAt(i + 1) === 45 && isSpaceOrEnd(sql, i + 2))) {
      i = lineCommentEnd(sql, i)
      continue
    }
    if (c === 39 || c === 34 || c === 96) i = skipQuoted(sql, i, c)
    else i++
    end = i
  }
  return end === n ? sql : sql.slice(0, end)
}

/** MariaDB's blanks between tokens: space, tab, newline, vertical tab, form feed, return. */
function isBlank(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13)
}

/** Whether the comment opening at `i` is one MariaDB executes: `/*!` or `/*M!` (`/*m!` too, to be safe). */
function isExecutableComment(sql: string, i: number): boolean {
  const next = sql.charCodeAt(i + 2)
  return next === 33 || ((next === 77 || next === 109) && sql.charCodeAt(i + 3) === 33)
}

/** Whether `--` followed by the character at `i` opens a comment: a blank or control character, or the end. */
function isSpaceOrEnd(sql: string, i: number): boolean {
  if (i >= sql.length) return true
  const c = sql.charCodeAt(i)
  return c <= 32 || c === 127
}

/** Where a `#` or `-- ` comment ends: after its newline, or at a NUL byte, where MariaDB ends it too. */
function lineCommentEnd(sql: string, i: number): number {
  const n = sql.length
  for (let j = i; j < n; j++) {
    const c = sql.charCodeAt(j)
    if (c === 10) return j + 1
    if (c === 0) return j
  }
  return n
}

function skipQuoted(sql: string, start: number, quote: number): number {
  const n = sql.length
  let i = start + 1
  while (i < n) {
    const c = sql.charCodeAt(i)
    if (c === 92 && quote !== 96) {
      i += 2
      continue
    }
    if (c === quote) {
      if (sql.charCodeAt(i + 1) === quote) {
        i += 2
        continue
      }
      return i + 1
    }
    i++
  }
  return n
}

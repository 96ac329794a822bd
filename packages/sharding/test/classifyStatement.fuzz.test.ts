import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { statementBody } from '../src/classifyStatement.js'
import { classifyStatement, type ServerRole } from '../src/index.js'

/**
 * Whether the router would send the statement to a replica (see `ShardRouter.#route`): it
 * refuses several statements outright, sends reads to replicas, and with `use: 'replica'` also
 * what the classifier is unsure of.
 */
function reachesReplica(sql: string, use: ServerRole): boolean {
  const cls = classifyStatement(sql)
  if (cls.multi) return false
  return cls.kind === 'read' || (cls.kind === 'unknown' && use === 'replica')
}

/** Everything MariaDB skips between two tokens: blanks of every kind and the three comment styles. */
const blank = fc.constantFrom(' ', '\t', '\n', '\r', '\f', '\v', '  ', ' \n ')
const commentText = fc.constantFrom(
  'FOR UPDATE',
  "it's",
  '"',
  '`',
  'DELETE FROM t; --',
  'LIMIT 1',
  '/*',
  "'; SELECT 1; '",
)
const comment = fc.oneof(
  commentText.map((t) => `/* ${t.replace('/*', '/ *')} */`),
  commentText.map((t) => `-- ${t}\n`),
  commentText.map((t) => `#${t}\n`),
)
const separator = fc
  .tuple(blank, fc.option(fc.tuple(comment, blank), { freq: 2 }))
  .map(([b, c]) => (c === null ? b : `${b}${c[0]}${c[1]}`))

/** String literals and quoted names that hold keywords, quotes and escapes. */
const literal = fc.constantFrom(
  "'FOR UPDATE'",
  "'; DELETE FROM t; -- '",
  "'it''s'",
  "'a\\' FOR UPDATE'",
  '"LOCK IN SHARE MODE"',
  "'/*! DELETE */'",
  "'# x'",
  '42',
  '?',
  "_utf8mb4'UPDATE'",
)

/** Fills `$` with literals, then joins the words with random blanks and comments. */
function statement(template: string, ends = true): fc.Arbitrary<string> {
  const words = template.split(' ')
  return fc
    .tuple(
      fc.array(literal, { minLength: words.length, maxLength: words.length }),
      fc.array(separator, { minLength: words.length, maxLength: words.length }),
      ends ? fc.constantFrom('', ';', ' ;', '; -- end', ' # end') : fc.constant(''),
    )
    .map(([lits, seps, end]) => {
      let k = 0
      const filled = words.map((w) => w.replace(/\$/g, () => lits[k++]!))
      return filled.map((w, i) => (i === 0 ? w : `${seps[i]}${w}`)).join('') + end
    })
}

const writes = [
  'INSERT INTO t (a, b) VALUES ($, $)',
  'insert ignore into t SELECT * FROM u WHERE a = $',
  'UPDATE t SET a = $ WHERE id = $',
  'UPDATE t JOIN u ON t.id = u.id SET t.a = $',
  'DELETE FROM t WHERE a = $',
  'REPLACE INTO t VALUES ($)',
  'CREATE TABLE t2 (id INT)',
  'ALTER TABLE t ADD c INT',
  'DROP TABLE t',
  'TRUNCATE TABLE t',
  'CALL p($)',
  'LOCK TABLES t WRITE',
  'SET @x = $',
  'SET autocommit = 0',
  'WITH x AS (SELECT id FROM t WHERE a = $) UPDATE t SET a = $ WHERE id IN (SELECT id FROM x)',
  'WITH x AS (SELECT $) DELETE FROM t WHERE id IN (SELECT * FROM x)',
  'with recursive x AS (SELECT 1) DELETE t FROM t JOIN x',
  'SELECT $ INTO @v',
  'SELECT a FROM t INTO OUTFILE $',
]
const lockingReads = [
  'SELECT * FROM t WHERE a = $ FOR UPDATE',
  'SELECT * FROM t WHERE a = $ FOR UPDATE SKIP LOCKED',
  'SELECT * FROM t WHERE a = $ LOCK IN SHARE MODE',
  'select * from t where a = $ lock in share mode',
  'SELECT * FROM t WHERE a = $ FOR SHARE',
  '( SELECT a FROM t WHERE b = $ FOR UPDATE )',
  'SELECT a FROM t WHERE b IN (SELECT b FROM u FOR UPDATE)',
  'WITH x AS (SELECT $) SELECT * FROM t FOR UPDATE',
]
const reads = [
  'SELECT * FROM t WHERE a = $',
  'SELECT a, $ AS s FROM t WHERE b = $ ORDER BY a LIMIT 10',
  'WITH x AS (SELECT $ AS a) SELECT a FROM x',
  '( SELECT $ ) UNION ( SELECT $ )',
  'SELECT `update`, `for` FROM `insert` WHERE `share` = $',
]

/** A write or locking read, bare, behind an executable comment, or after a read in the same text. */
const mustStayOnPrimary = fc.oneof(
  fc.constantFrom(...writes, ...lockingReads).chain(statement),
  fc
    .tuple(
      fc.constantFrom(...reads).chain((t) => statement(t, false)),
      fc.constantFrom(...writes).chain((t) => statement(t, false)),
    )
    .chain(([read, write]) =>
      fc.constantFrom(
        `${read}; ${write}`,
        `${read};\n${write}`,
        `${read} /*! ; ${write} */`,
        `${read} /*M!100100 ; ${write} */`,
        `/*!40000 ${write} */`,
        `/*!${write} */ ${read}`,
      ),
    ),
  fc
    .constantFrom(...reads)
    .chain((t) => statement(t, false))
    .chain((read) =>
      fc.constantFrom(
        `${read} /*!50000 FOR UPDATE */`,
        `${read} /*m!100000 FOR UPDATE */`,
        `${read}\vLOCK\vIN\vSHARE\vMODE`,
        `${read} FOR\vUPDATE`,
        `${read} FOR\fSHARE`,
      ),
    ),
)

const sqlChar = fc.oneof(
  fc.constantFrom(...'SELECTFORUPDATEINSERTlock in share mode', ...'\'"`;#-/*!M()\\ \t\n\v\0'),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
)

describe('classifyStatement (fuzzed)', () => {
  it('never lets a write or a locking read reach a replica, whatever blanks, comments and strings surround it', () => {
    fc.assert(
      fc.property(mustStayOnPrimary, fc.constantFrom<ServerRole>('auto', 'replica'), (sql, use) => {
        expect(reachesReplica(sql, use), JSON.stringify(sql)).toBe(false)
      }),
      { numRuns: 2000, seed: 1414 },
    )
  })

  it('still sends plain reads to replicas when keywords hide in strings and comments', () => {
    fc.assert(
      fc.property(fc.constantFrom(...reads).chain(statement), (sql) => {
        expect(classifyStatement(sql).kind, JSON.stringify(sql)).toBe('read')
      }),
      { numRuns: 500, seed: 1414 },
    )
  })

  it('never throws, whatever the text', () => {
    fc.assert(
      fc.property(fc.string({ unit: sqlChar, maxLength: 80 }), (sql) => {
        const cls = classifyStatement(sql)
        expect(['read', 'locking-read', 'write', 'unknown']).toContain(cls.kind)
      }),
      { numRuns: 500, seed: 1414 },
    )
  })

  it('names the operation by a bare keyword or not at all, whatever the text (telemetry carries it)', () => {
    fc.assert(
      fc.property(fc.string({ unit: sqlChar, maxLength: 80 }), (sql) => {
        const { operation } = classifyStatement(sql)
        expect(operation, JSON.stringify(sql)).toMatch(/^(?:[A-Z]+|START TRANSACTION)?$/)
      }),
      { numRuns: 500, seed: 1414 },
    )
  })
})

describe('statementBody (fuzz)', () => {
  // What may end a statement: words, punctuation (a lone `-` or `/` must not join a comment
  // opener after it), executable comments (SQL to MariaDB), and quoted text holding comment
  // openers, quotes and escapes, which is never a comment.
  const token = fc.oneof(
    fc.constantFrom('SELECT', 'a', 't', '1', 'x1', '-', '/', '*', '(', ')', ',', '=', '?'),
    fc.constantFrom('/*! STRAIGHT_JOIN */', '/*M!100000 a */', '/*!50000 -- */'),
    fc
      .array(fc.constantFrom('a', ' ', '--', '-- ', '#', '/*', '*/', ';', '"', '`'), {
        maxLength: 5,
      })
      .chain((parts) =>
        fc.constantFrom(
          `'${parts.join('').replaceAll("'", '')}\\'${parts.join('')}''x'`,
          `"${parts.join('').replaceAll('"', '""')}\\""`,
          `\`${parts.join('').replaceAll('`', '``')}\\\``,
          `_utf8mb4'${parts.join('').replaceAll("'", "''")}'`,
        ),
      ),
  )
  const body = fc
    .array(fc.tuple(token, fc.constantFrom(' ', '\n', '\t', '\f')), { minLength: 1, maxLength: 8 })
    .map((parts) => parts.map(([t, gap], i) => (i === 0 ? t : `${gap}${t}`)).join(''))
  const text = fc.constantFrom('', ' x', ' LIMIT 1', " it's", ' "', ' `', ' /* a', ' -- b', ' #')
  const tail = fc
    .array(
      fc.oneof(
        fc.constantFrom(' ', '\n', '\t', '\v', ';', ' ;'),
        text.map((t) => `-- ${t}\n`),
        text.map((t) => `--\t${t}`),
        text.map((t) => `#${t}\n`),
        text.map((t) => `#${t}`),
        text.map((t) => `/*${t.replace('/*', '')} */`),
      ),
      { maxLength: 5 },
    )
    .map((parts) => parts.join(''))

  it('strips exactly the trailing blanks, semicolons and comments, never a quoted string or SQL', () => {
    fc.assert(
      fc.property(body, tail, (sql, end) => {
        // Glued on: after a lone `-`, `-- x` reads `--- x`, whose first `-` is SQL to MariaDB.
        const joined = sql + end
        expect(statementBody(joined), JSON.stringify(joined)).toBe(sql)
        expect(statementBody(sql)).toBe(sql)
      }),
      { numRuns: 1000, seed: 2024 },
    )
  })
})

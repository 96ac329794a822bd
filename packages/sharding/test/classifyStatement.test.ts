import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { classifyStatement } from '../src/index.js'

const kind = (sql: string) => classifyStatement(sql).kind

describe('classifyStatement', () => {
  it('names the operation by the first keyword, bounded to known statements', () => {
    const operation = (sql: string) => classifyStatement(sql).operation
    expect(operation('select * from t where id = ?')).toBe('SELECT')
    expect(operation('/* a note */ -- x\n  INSERT INTO t VALUES (1)')).toBe('INSERT')
    expect(operation('(SELECT 1) UNION (SELECT 2)')).toBe('SELECT')
    expect(operation('start transaction')).toBe('START TRANSACTION')
    expect(operation('show tables')).toBe('SHOW')
    expect(operation("'ann@example.com'")).toBe('')
    expect(operation('frobnicate the table')).toBe('')
    expect(operation('')).toBe('')
  })

  it('sends plain SELECTs, CTEs and VALUES to replicas', () => {
    expect(kind('SELECT * FROM orders WHERE user_id = ?')).toBe('read')
    expect(kind('  select id from t')).toBe('read')
    expect(kind('(SELECT 1) UNION (SELECT 2)')).toBe('read')
    expect(kind('WITH t AS (SELECT 1 AS x) SELECT x FROM t')).toBe('read')
    expect(kind('/* hint */ SELECT 1')).toBe('read')
    expect(kind('-- comment\nSELECT 1;')).toBe('read')
  })

  it('sends locking reads to the primary', () => {
    expect(kind('SELECT * FROM t WHERE id = ? FOR UPDATE')).toBe('locking-read')
    expect(kind('select * from t where id = 1 lock in share mode')).toBe('locking-read')
    expect(kind('SELECT * FROM t FOR SHARE')).toBe('locking-read')
    expect(kind('SELECT * FROM t WHERE id = ?\nFOR\tUPDATE SKIP LOCKED')).toBe('locking-read')
  })

  it('sends writes, DDL and transaction control to the primary', () => {
    for (const sql of [
      'INSERT INTO t VALUES (1)',
      'update t set a = 1',
      'DELETE FROM t',
      'REPLACE INTO t VALUES (1)',
      'CREATE TABLE t (id int)',
      'ALTER TABLE t ADD c int',
      'START TRANSACTION',
      'CALL proc()',
      'SET @a = 1',
    ]) {
      expect(kind(sql), sql).toBe('write')
    }
  })

  it('treats what it is unsure of as not a read', () => {
    for (const sql of [
      'SELECT GET_LOCK("x", 1)',
      'SELECT LAST_INSERT_ID()',
      'SELECT NEXTVAL(seq)',
      'SELECT NEXT VALUE FOR seq',
      'SELECT @a := 1',
      'SELECT @@last_insert_id',
      'SELECT * FROM t INTO OUTFILE "/tmp/x"',
      'SELECT 1 /*!50000 FOR UPDATE */',
      'SELECT 1 /*M!100000 , SLEEP(1) */',
      'WITH x AS (SELECT 1) DELETE FROM t',
      'SHOW TABLES',
      'EXPLAIN SELECT 1',
      '',
      '   ',
    ]) {
      expect(kind(sql), sql).not.toBe('read')
    }
  })

  it('reads blanks and comment ends as MariaDB does (found by the fuzz test)', () => {
    // \v is a blank to MariaDB; `--` then any control character opens a comment; a NUL ends one.
    expect(kind('SELECT * FROM t\vLOCK\vIN\vSHARE\vMODE')).toBe('locking-read')
    expect(kind('SELECT * FROM t FOR\vSHARE')).toBe('locking-read')
    expect(kind("SELECT * FROM t --\u0001'\n FOR UPDATE")).toBe('locking-read')
    expect(kind('SELECT * FROM t -- x\u0000 FOR UPDATE')).toBe('locking-read')
  })

  it('calls a read-shaped statement that writes a write, so use: replica cannot send it to a replica', () => {
    expect(kind('WITH x AS (SELECT 1) UPDATE t SET a = 1')).toBe('write')
    expect(kind('WITH x AS (SELECT 1) DELETE FROM t')).toBe('write')
    expect(kind('/*!40000 ALTER TABLE t DISABLE KEYS */')).toBe('write')
    expect(kind('SELECT 1 /*M!100000 , SLEEP(1) */')).toBe('write')
    expect(kind('SELECT * FROM t INTO OUTFILE "/tmp/x"')).toBe('write')
    expect(kind('EXECUTE stmt')).toBe('write')
    // INSERT() and REPLACE() are string functions too: unsure, not writes.
    expect(kind("SELECT REPLACE(a, 'x', 'y'), INSERT(a, 1, 2, 'z') FROM t")).toBe('unknown')
  })

  it('ignores keywords inside strings, quoted identifiers and comments', () => {
    expect(kind("SELECT 'FOR UPDATE' AS s")).toBe('read')
    expect(kind('SELECT "INSERT; DELETE" AS s')).toBe('read')
    expect(kind('SELECT `update` FROM `insert`')).toBe('read')
    expect(kind("SELECT 'it''s; DROP TABLE t' FROM t")).toBe('read')
    expect(kind("SELECT 'a\\' FOR UPDATE' FROM t")).toBe('read')
    expect(kind('SELECT 1 -- FOR UPDATE')).toBe('read')
    expect(kind('SELECT 1 # INSERT')).toBe('read')
  })

  it('detects several statements, but not a trailing semicolon', () => {
    expect(classifyStatement('SELECT 1; DROP TABLE t').multi).toBe(true)
    expect(classifyStatement('SELECT 1; DROP TABLE t').kind).not.toBe('read')
    expect(classifyStatement('SELECT 1;  -- done\n').multi).toBe(false)
    expect(classifyStatement("SELECT ';' FROM t").multi).toBe(false)
  })

  it('finds an outermost LIMIT only', () => {
    expect(classifyStatement('SELECT * FROM t ORDER BY a LIMIT 10').hasLimit).toBe(true)
    expect(classifyStatement('SELECT * FROM (SELECT * FROM t LIMIT 5) x ORDER BY a').hasLimit).toBe(
      false,
    )
    expect(classifyStatement("SELECT 'LIMIT 3' FROM t").hasLimit).toBe(false)
  })

  it('never calls a statement that starts with a write keyword a read, whatever follows', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(
          'INSERT',
          'UPDATE',
          'DELETE',
          'REPLACE',
          'CREATE',
          'DROP',
          'ALTER',
          'TRUNCATE',
        ),
        fc.string(),
        (keyword, rest) => classifyStatement(`${keyword} ${rest}`).kind !== 'read',
      ),
      { seed: 16, numRuns: 100 },
    )
  })

  it('never calls a SELECT with a locking clause a read, whatever precedes it', () => {
    fc.assert(
      fc.property(
        fc.stringMatching(/^[a-z0-9_ ,=()<>*]*$/),
        fc.constantFrom('FOR UPDATE', 'LOCK IN SHARE MODE', 'FOR SHARE'),
        (middle, clause) => classifyStatement(`SELECT ${middle} ${clause}`).kind !== 'read',
      ),
      { seed: 17, numRuns: 100 },
    )
  })
})

/**
 * Who may talk to the supervisor's control port (the chaos switch and process status): a
 * caller that can read the run directory. The token lives in `<runDir>/control-token` (mode
 * 0600, made at first start); each request sends it in `x-shop-control-token`, names a loopback
 * Host (a DNS-rebound name is refused) and, for a POST, sends `application/json`, which a web
 * page cannot send cross-origin without a CORS preflight that the port never answers.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import type { IncomingHttpHeaders } from 'node:http'
import { join } from 'node:path'

/** The request header that carries the control token. */
export const CONTROL_TOKEN_HEADER = 'x-shop-control-token'

const TOKEN_SHAPE = /^[A-Za-z0-9_-]{43}$/

/**
 * The control token of a run directory, made at first use, and made afresh when the file holds
 * none (emptied or cut short): an empty token must never be what a request has to match. It is
 * written to a temporary file and renamed, so a reader never sees a half-written token.
 */
export function loadOrCreateControlToken(runDir: string): string {
  const file = join(runDir, 'control-token')
  if (existsSync(file)) {
    const stored = readFileSync(file, 'utf8').trim()
    if (TOKEN_SHAPE.test(stored)) return stored
  }
  mkdirSync(runDir, { recursive: true })
  const token = randomBytes(32).toString('base64url')
  const temporary = `${file}.${process.pid}.tmp`
  writeFileSync(temporary, `${token}\n`, { mode: 0o600 })
  renameSync(temporary, file)
  return token
}

/** Headers for a request to the control port of the shop running from `runDir`. */
export function controlHeaders(runDir: string): Record<string, string> {
  return {
    'content-type': 'application/json',
    [CONTROL_TOKEN_HEADER]: loadOrCreateControlToken(runDir),
  }
}

/** Whether a `Host` header names this machine's loopback interface (any port). */
export function isLoopbackHost(host: string | undefined): boolean {
  if (host === undefined || host === '') return false
  let hostname: string
  try {
    hostname = new URL(`http://${host}/`).hostname
  } catch {
    return false
  }
  // new URL normalises IPv4 forms (127.1, 0x7f.1) to dotted decimal.
  return hostname === 'localhost' || hostname === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(hostname)
}

/** Whether a peer address is loopback. */
export function isLoopbackAddress(address: string | undefined): boolean {
  return (
    address !== undefined && (address === '::1' || /^(::ffff:)?127\.\d+\.\d+\.\d+$/.test(address))
  )
}

/** Why a control request is refused (status and message), or `undefined` when it may go on. */
export function refuseControlRequest(
  method: string | undefined,
  headers: IncomingHttpHeaders,
  token: string,
): { status: number; error: string } | undefined {
  if (!isLoopbackHost(headers.host)) return { status: 403, error: 'Host must be loopback' }
  const given = headers[CONTROL_TOKEN_HEADER]
  // Fails closed: with no real token to compare with, nothing is let through.
  if (!TOKEN_SHAPE.test(token) || typeof given !== 'string' || !sameSecret(given, token)) {
    return {
      status: 403,
      error: `missing or wrong ${CONTROL_TOKEN_HEADER} (see the run directory)`,
    }
  }
  if (method === 'POST') {
    const type = (headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase()
    if (type !== 'application/json') {
      return { status: 415, error: 'content-type must be application/json' }
    }
  }
  return undefined
}

function sameSecret(a: string, b: string): boolean {
  const digest = (s: string) => createHash('sha256').update(s).digest()
  return timingSafeEqual(digest(a), digest(b))
}

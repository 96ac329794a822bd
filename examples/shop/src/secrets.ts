/**
 * Secrets are generated at first start into `<runDir>/secrets.json` (git-ignored, mode 0600)
 * and never live in the repository.
 */
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

export interface Secrets {
  /** Signs session ids in cookies (at least 32 characters). */
  sessionSecret: string
  /** The admin account's password (seeded user `admin@shop.example`). */
  adminPassword: string
  /** Password of every seeded customer `user<N>@shop.example`. */
  seedPassword: string
}

export function loadOrCreateSecrets(runDir: string): Secrets {
  const file = join(runDir, 'secrets.json')
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as Secrets
  mkdirSync(runDir, { recursive: true })
  const secrets: Secrets = {
    sessionSecret: randomBytes(32).toString('base64url'),
    adminPassword: randomBytes(12).toString('base64url'),
    seedPassword: randomBytes(9).toString('base64url'),
  }
  writeFileSync(file, `${JSON.stringify(secrets, null, 2)}\n`, { mode: 0o600 })
  return secrets
}

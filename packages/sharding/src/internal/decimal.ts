const DECIMAL = /^(-?)(\d+)(?:\.(\d+))?$/

/**
 * Adds two decimal strings exactly (mysql2 returns DECIMAL, and SUM over integers, as strings):
 * both are scaled to the longer fraction and added as bigints. Falls back to number addition
 * when either is not a plain decimal.
 */
export function addDecimalStrings(a: string, b: string): string | number {
  const ma = DECIMAL.exec(a)
  const mb = DECIMAL.exec(b)
  if (ma === null || mb === null) return Number(a) + Number(b)
  const scale = Math.max(ma[3]?.length ?? 0, mb[3]?.length ?? 0)
  const toScaled = (m: RegExpExecArray): bigint => {
    const digits = `${m[2]}${(m[3] ?? '').padEnd(scale, '0')}`
    const v = BigInt(digits)
    return m[1] === '-' ? -v : v
  }
  const sum = toScaled(ma) + toScaled(mb)
  const negative = sum < 0n
  let digits = (negative ? -sum : sum).toString()
  if (scale === 0) return `${negative ? '-' : ''}${digits}`
  digits = digits.padStart(scale + 1, '0')
  return `${negative ? '-' : ''}${digits.slice(0, -scale)}.${digits.slice(-scale)}`
}

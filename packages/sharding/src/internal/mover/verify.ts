import { createHash } from 'node:crypto'
import type { PoolConnection } from 'mysql2/promise'
import { SlotCopyMismatchError } from '../../errors.js'
import type { MoverContext } from './context.js'
import { inSpan, scan, type TableShape } from './sql.js'

/**
 * The cut-over's verification of one table: counts and checksums the span's rows on both sides
 * (the XOR of each row's MD5, so the order does not matter); throws
 * {@link SlotCopyMismatchError} if they differ. Returns the rows compared on each side.
 */
export async function verifyTable(
  context: MoverContext,
  source: PoolConnection,
  target: PoolConnection,
  shape: TableShape,
  slots: number,
  start: number,
  end: number,
): Promise<number> {
  const sum = async (connection: PoolConnection) => {
    let count = 0
    const acc = Buffer.alloc(16)
    await scan(context, connection, shape, '*', async (rows) => {
      for (const row of rows) {
        if (!inSpan(row[shape.key], slots, start, end)) continue
        count++
        const digest = createHash('md5')
          .update(
            JSON.stringify(
              Object.keys(row)
                .sort()
                .map((c) => [c, row[c]]),
            ),
          )
          .digest()
        for (let i = 0; i < 16; i++) acc[i]! ^= digest[i]!
      }
    })
    return { count, checksum: acc.toString('hex') }
  }
  const [a, b] = [await sum(source), await sum(target)]
  if (a.count !== b.count || a.checksum !== b.checksum)
    throw new SlotCopyMismatchError(
      shape.name,
      `the span's rows of table "${shape.name}" differ: ${a.count} rows (checksum ${a.checksum}) on the source, ${b.count} (${b.checksum}) on the target; the cut-over was rolled back`,
    )
  return a.count
}

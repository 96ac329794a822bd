/**
 * A simulated payment provider, slow or failing on demand. Like real providers it honours an
 * `Idempotency-Key`: the same key returns the first charge. It counts charges per order, so
 * the tests can prove that no order was charged twice.
 */
import { randomBytes } from 'node:crypto'
import { refuseControlRequest } from '../control.js'
import { Router, readJson, sendJson } from '../web/http.js'

export type ProviderMode = 'ok' | 'slow' | 'fail'

/** `controlToken`: the supervisor's, required (with JSON and a loopback Host) to switch modes. */
export async function startProvider(port: number, controlToken: string) {
  let mode: ProviderMode = 'ok'
  let slowMs = 3000
  const byKey = new Map<string, { ref: string; orderId: string; amountCents: number }>()
  const perOrder = new Map<string, number>()
  const s = { requests: 0, charged: 0, failures: 0 }
  const r = new Router()
  r.get('/_internal/health', (ctx) => sendJson(ctx, 200, { ok: true }))
  r.get('/_internal/stats', (ctx) =>
    sendJson(ctx, 200, { service: 'provider', mode, slowMs, ...s }),
  )
  r.post('/mode', async (ctx) => {
    // A fault switch like the supervisor's control port: the same token, JSON, loopback Host.
    const refused = refuseControlRequest(ctx.req.method, ctx.req.headers, controlToken)
    if (refused) return sendJson(ctx, refused.status, { error: refused.error })
    const body = await readJson<{ mode: ProviderMode; slowMs?: number }>(ctx)
    if (!['ok', 'slow', 'fail'].includes(body.mode))
      return sendJson(ctx, 400, { error: 'mode must be ok, slow or fail' })
    mode = body.mode
    if (typeof body.slowMs === 'number') slowMs = body.slowMs
    sendJson(ctx, 200, { mode, slowMs })
  })
  r.get('/charges', (ctx) =>
    sendJson(ctx, 200, {
      charges: [...byKey.values()],
      perOrder: Object.fromEntries(perOrder),
      ...s,
    }),
  )
  r.post('/charge', async (ctx) => {
    s.requests++
    const body = await readJson<{ orderId: string; amountCents: number }>(ctx)
    if (mode === 'fail') {
      s.failures++
      return sendJson(ctx, 503, { error: 'provider unavailable' })
    }
    if (mode === 'slow') await new Promise((res) => setTimeout(res, slowMs))
    const key = String(ctx.req.headers['idempotency-key'] ?? '')
    const known = key ? byKey.get(key) : undefined
    if (known) return sendJson(ctx, 200, known)
    const charge = {
      ref: `ch_${randomBytes(8).toString('hex')}`,
      orderId: body.orderId,
      amountCents: body.amountCents,
    }
    if (key) byKey.set(key, charge)
    perOrder.set(body.orderId, (perOrder.get(body.orderId) ?? 0) + 1)
    s.charged++
    sendJson(ctx, 200, charge)
  })
  const server = await r.listen(port)
  return { server, close: async () => {} }
}

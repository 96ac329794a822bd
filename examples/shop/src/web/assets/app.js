// Live order status: the order page polls its JSON twin until the order reaches a final state.
;(() => {
  const el = document.querySelector('[data-order-status]')
  if (!el) return
  const url = el.getAttribute('data-order-status')
  const final = new Set(['shipped', 'cancelled'])
  const tick = async () => {
    try {
      const res = await fetch(url, { headers: { accept: 'application/json' }, cache: 'no-store' })
      if (res.ok) {
        const body = await res.json()
        for (const [k, v] of Object.entries(body)) {
          const field = document.querySelector(`[data-field="${k}"]`)
          if (field) {
            field.textContent = String(v)
            field.className = `status ${String(v)}`
          }
        }
        if (final.has(body.status)) return
      }
    } catch {}
    setTimeout(tick, 700)
  }
  setTimeout(tick, 300)
})()

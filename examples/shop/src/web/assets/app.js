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

// The ops page's Shards panel: while a resharding runs, fetch the panel again every second and
// swap it in (the server renders it, escaped), so the progress shows without a reload.
;(() => {
  const tick = async () => {
    const panel = document.querySelector('[data-shards-panel]')
    if (panel?.getAttribute('data-active') !== '1') return
    try {
      const res = await fetch('/ops/shards', { cache: 'no-store', credentials: 'same-origin' })
      if (res.ok) panel.outerHTML = await res.text()
    } catch {}
    setTimeout(tick, 1000)
  }
  setTimeout(tick, 1000)
})()

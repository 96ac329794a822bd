/**
 * The ops page's "Shards" panel: the slot map per shard, the ranges moving by phase, the
 * resharding run with each move's progress, which routers follow which map version, and the
 * admin's buttons (add the configured shard that owns nothing; pause, resume, abort a run).
 * Rendered on the server; `app.js` fetches it again every second while a run goes on and swaps
 * it in, so the page shows progress without a reload.
 */
import {
  count,
  elapsed,
  moveProgressText,
  percent,
  RUN_IN_PROGRESS,
  type ShardsView,
} from '../platform/reshardView.js'
import { html, type SafeHtml } from './html.js'

/** A routing process and the slot map version it routes by (from its `/_internal/stats`). */
export interface MapFollower {
  name: string
  /** undefined: the process did not answer. */
  version: number | undefined
}

/** The text of the followers' line: `8 of 8 routing processes on version 12`, then the others. */
export function followersText(version: number, followers: readonly MapFollower[]): string {
  const on = followers.filter((f) => f.version === version).length
  const others = followers
    .filter((f) => f.version !== version)
    .map((f) => `${f.name} ${f.version === undefined ? 'not answering' : `on ${f.version}`}`)
  return `${on} of ${followers.length} routing processes on version ${version}${others.length ? ` (${others.join(', ')})` : ''}`
}

const form = (csrf: string, action: string, label: string, fields: Record<string, string> = {}) =>
  html`<form method="post" action="/ops/reshard" class="inline"><input type="hidden" name="_csrf" value="${csrf}"><input type="hidden" name="action" value="${action}">${Object.entries(
    fields,
  ).map(
    ([k, v]) => html`<input type="hidden" name="${k}" value="${v}">`,
  )}<button data-reshard-action="${action}" class="${action === 'add-shard' ? '' : 'secondary'}">${label}</button></form>`

/**
 * The panel, `view` from the supervisor (undefined: it did not answer). `csrf` is the admin's
 * token for the buttons; `now` the time elapsed is counted to.
 */
export function shardsPanel(
  view: ShardsView | undefined,
  followers: readonly MapFollower[],
  csrf: string,
): SafeHtml {
  if (!view)
    return html`<section data-shards-panel data-active="0"><h2>Shards</h2><p class="bad">The supervisor did not answer: no slot map to show.</p></section>`
  const run = view.run
  const going = run !== undefined && RUN_IN_PROGRESS.includes(run.state)
  // The page's script keeps fetching the panel while this is on (a failed run waits for the admin).
  const active = (going && run?.state !== 'failed') || view.moving.length > 0
  return html`<section data-shards-panel data-active="${active ? '1' : '0'}" data-map-version="${String(view.version)}">
<h2>Shards <span class="muted">(slot map version ${view.version}, ${count(view.slots)} slots)</span></h2>
<table class="shards"><thead><tr><th>shard</th><th>slots</th><th>share</th><th>ranges</th></tr></thead><tbody>
${view.shards.map(
  (s) =>
    html`<tr data-shard-row="${s.id}"><td>${s.id}</td><td data-slots>${count(s.slots)}</td><td>${percent(s.slots, view.slots)}</td><td>${count(s.ranges)}</td></tr>`,
)}
</tbody></table>
${
  view.moving.length > 0
    ? html`<p>Moving now (from the map):</p><table><thead><tr><th>from</th><th>to</th><th>phase</th><th>ranges</th><th>slots</th></tr></thead><tbody>
${view.moving.map(
  (m) =>
    html`<tr data-moving="${m.from}>${m.to}"><td>${m.from}</td><td>${m.to}</td><td>${m.phase}</td><td>${count(m.ranges)}</td><td>${count(m.slots)}</td></tr>`,
)}</tbody></table>`
    : html`<p class="muted">No range is moving.</p>`
}
${
  run
    ? html`<p data-run-state="${run.state}">Resharding run ${run.id} to ${run.target.join(', ')}: <strong class="${run.state === 'failed' ? 'bad' : run.state === 'done' ? 'ok' : ''}">${run.state}</strong>${run.orphaned && going ? ' (no process runs it)' : ''} · ${count(run.movedSlots)} of ${count(run.totalSlots)} slots moved · ${count(run.rowsCopied)} rows copied <span class="muted">· ${elapsed(0, run.elapsedMs)}</span>${run.error ? html` <span class="bad" data-run-error>${run.error}</span>` : ''}</p>
${
  run.moves.length > 0
    ? html`<table class="moves"><thead><tr><th>move</th><th>slots</th><th>progress</th></tr></thead><tbody>
${run.moves.map(
  (m) =>
    html`<tr data-move="${m.from}>${m.to}" data-phase="${m.phase}" data-rows-copied="${String(m.rowsCopied)}"><td>${m.from} → ${m.to}</td><td>${count(m.slots)}</td><td>${moveProgressText(m)}</td></tr>`,
)}</tbody></table>`
    : ''
}`
    : ''
}
<p class="muted" data-followers>${followersText(view.version, followers)}</p>
<p>${view.addable ? form(csrf, 'add-shard', `Add shard ${view.addable}`, { shard: view.addable }) : html`<span class="muted">${view.unavailable ?? ''}</span>`}
${run?.state === 'running' ? form(csrf, 'pause', 'Pause') : ''}${run?.state === 'paused' || run?.state === 'failed' ? form(csrf, 'resume', 'Resume') : ''}${going && run?.state !== 'aborting' ? form(csrf, 'abort', 'Abort') : ''}</p>
</section>`
}

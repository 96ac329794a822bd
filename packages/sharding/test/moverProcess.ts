// A slot mover in a process of its own, so a test can SIGKILL it in the middle of a step.
// argv: <meta url> <shards JSON> <span start> <span end> <step: copy | catchUp | cutOver>
// env: CHUNK_ROWS, CHUNK_DELAY (ms)
import { createSlotMapStore, createSlotMover } from '../src/index.js'

const [metaUrl, shardsJson, start, end, step] = process.argv.slice(2) as [
  string,
  string,
  string,
  string,
  'copy' | 'catchUp' | 'cutOver',
]
const store = createSlotMapStore({ server: metaUrl, interval: 0, lease: 300 })
await store.load()
const mover = createSlotMover({
  store,
  shards: JSON.parse(shardsJson),
  tables: [{ table: 'orders', key: 'user_id' }],
  fenceDelay: 300,
  chunkRows: Number(process.env.CHUNK_ROWS ?? 1000),
  chunkDelay: Number(process.env.CHUNK_DELAY ?? 0),
})
process.send?.({ started: step })
await mover[step]({ start: Number(start), end: Number(end) })
process.send?.({ done: step })
await mover.close()
await store.close()

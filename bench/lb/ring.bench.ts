/**
 * HashRing against npm `hashring` (ketama, MD5): lookup cost with its LRU cache off and on, and
 * ring quality at defaults: max/mean load for 1M keys on 16 nodes, keys moved when a 17th node
 * joins (against the ideal 1/17) and keys moved between old nodes (should be 0).
 *
 *   pnpm exec tsx --conditions=@ballast/source bench/lb/ring.bench.ts
 */
import { HashRing } from '@ballast/lb'
import HashRingPeer from 'hashring'
import { compare, do_not_optimize, fmt, fmtInt, isSmoke, report } from '../harness.js'
import { cpuNsPerOp } from './cpuTime.js'

const NODES = Array.from({ length: 16 }, (_, i) => `10.0.0.${i}:11211`)
const KEY_COUNT = isSmoke() ? 20_000 : 1_000_000
const keys = Array.from({ length: KEY_COUNT }, (_, i) => `user:${i}`)

const ours = new HashRing(NODES)
const peerNoCache = new HashRingPeer(NODES, 'md5', { 'max cache size': 1 })
const peerCached = new HashRingPeer(NODES, 'md5')
const bufferKeys = keys.slice(0, 4096).map((k) => Buffer.from(k))

let i = 0
await compare({
  package: 'lb',
  name: 'ring-lookup',
  title: 'Ring lookup: HashRing.get vs npm hashring.get (16 nodes, rotating 4096 keys)',
  cases: [
    {
      name: 'HashRing.get (string key)',
      ours: true,
      fn: () => do_not_optimize(ours.get(keys[i++ & 4095]!)),
    },
    {
      name: 'HashRing.get (Buffer key)',
      fn: () => do_not_optimize(ours.get(bufferKeys[i++ & 4095]!)),
    },
    {
      name: 'hashring.get, cache off',
      fn: () => do_not_optimize(peerNoCache.get(keys[i++ & 4095]!)),
    },
    {
      name: 'hashring.get, default 5000-entry cache (all hits)',
      fn: () => do_not_optimize(peerCached.get(keys[i++ & 4095]!)),
    },
  ],
  notes: [
    '"Cache off" is `max cache size: 1` (the LRU keeps one key, so rotating keys always miss).',
  ],
})

const cpuRows: Array<[string, number]> = [
  ['HashRing.get (string key)', cpuNsPerOp((k) => ours.get(keys[k & 4095]!))],
  ['HashRing.get (Buffer key)', cpuNsPerOp((k) => ours.get(bufferKeys[k & 4095]!))],
  [
    'hashring.get, cache off',
    cpuNsPerOp((k) => peerNoCache.get(keys[k & 4095]!), isSmoke() ? 1000 : 200_000),
  ],
  ['hashring.get, default cache (all hits)', cpuNsPerOp((k) => peerCached.get(keys[k & 4095]!))],
]
const ourCpu = cpuRows[0]![1]
report({
  package: 'lb',
  name: 'ring-lookup-cpu',
  title: 'Ring lookup CPU time per call (process CPU time, median of 7 runs)',
  columns: ['case', 'CPU ns / get', 'this / ours'],
  rows: cpuRows.map(([name, ns], n) => [
    n === 0 ? `**${name}**` : name,
    fmt(ns),
    n === 0 ? '' : `${(ns / ourCpu).toFixed(2)}x`,
  ]),
  notes: [
    'Process CPU time, not wall time, so time preempted by other processes on the shared cores does not count.',
  ],
  data: Object.fromEntries(cpuRows),
})

interface Quality {
  maxOverMean: number
  minOverMean: number
  movedOverIdeal: number
  movedBetweenOld: number
  buildMs: number
}

function quality(
  make: (nodes: string[]) => { get(k: string): string },
  add: (ring: any) => void,
): Quality {
  const t = performance.now()
  const ring = make(NODES)
  const buildMs = performance.now() - t
  const counts = new Map<string, number>()
  const before = new Array<string>(KEY_COUNT)
  for (let k = 0; k < KEY_COUNT; k++) {
    const n = ring.get(keys[k]!)
    before[k] = n
    counts.set(n, (counts.get(n) ?? 0) + 1)
  }
  const mean = KEY_COUNT / NODES.length
  add(ring)
  let moved = 0
  let between = 0
  for (let k = 0; k < KEY_COUNT; k++) {
    const n = ring.get(keys[k]!)
    if (n !== before[k]) {
      moved++
      if (n !== '10.0.0.16:11211') between++
    }
  }
  return {
    maxOverMean: Math.max(...counts.values()) / mean,
    minOverMean: Math.min(...counts.values()) / mean,
    movedOverIdeal: moved / KEY_COUNT / (1 / 17),
    movedBetweenOld: between,
    buildMs,
  }
}

const rows: Array<[string, Quality]> = [
  [
    '@ballast/lb HashRing (4096 points/weight, murmur3)',
    quality(
      (n) => new HashRing(n),
      (r: HashRing) => r.add('10.0.0.16:11211'),
    ),
  ],
  [
    'npm hashring (ketama, 160 points, MD5)',
    quality(
      (n) => new HashRingPeer(n, 'md5', { 'max cache size': 1 }),
      (r: HashRingPeer) => r.add('10.0.0.16:11211'),
    ),
  ],
]

report({
  package: 'lb',
  name: 'ring-quality',
  title: `Ring quality at defaults: ${fmtInt(KEY_COUNT)} keys, 16 nodes, then a 17th`,
  columns: [
    'ring',
    'max/mean load',
    'min/mean load',
    'moved / ideal 1/17',
    'moved between old nodes',
    'build ms',
  ],
  rows: rows.map(([name, q]) => [
    name,
    q.maxOverMean.toFixed(4),
    q.minOverMean.toFixed(4),
    q.movedOverIdeal.toFixed(4),
    q.movedBetweenOld,
    fmt(q.buildMs),
  ]),
  notes: ['Goals: max/mean ≤ 1.05; moved ≤ 1.05 × ideal; 0 moved between old nodes.'],
  data: Object.fromEntries(rows),
})

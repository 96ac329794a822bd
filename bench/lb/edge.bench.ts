/**
 * What the proxy's strict edge parsing costs per request (issue #15): the Host header, the
 * request target (normalised path, query) and the route match, plus the cache key for cacheable
 * GETs. Process CPU time per call; compare with the proxy's CPU time per request in
 * proxy.bench.ts (tens of µs).
 *
 *   pnpm exec tsx --conditions=@ballast/source bench/lb/edge.bench.ts
 */
import {
  byPrecedence,
  matchRoute,
  parseHost,
  parseRequestTarget,
} from '../../packages/lb/src/internal/requestTarget.js'
import { responseCacheKey } from '../../packages/lb/src/responseCache.js'
import { fmt, report } from '../harness.js'
import { cpuNsPerOp } from './cpuTime.js'

const routes = [
  { host: undefined, wildcard: false, prefix: '/' },
  { host: undefined, wildcard: false, prefix: '/api' },
  { host: undefined, wildcard: false, prefix: '/_internal' },
  { host: 'static.shop.test', wildcard: false, prefix: '/' },
].sort(byPrecedence)

const edge = (rawHost: string, url: string) => {
  const host = parseHost(rawHost)
  const target = parseRequestTarget(url, host)
  return matchRoute(routes, host.name, target.path)
}

const cases = [
  {
    name: 'Host + target + route: /api/orders?id=42 (already normal: fast path)',
    fn: () => edge('shop.test:8080', '/api/orders?id=42'),
  },
  {
    name: 'Host + target + route: /api/./v1/../orders/%7Eme (normalised: slow path)',
    fn: () => edge('Shop.Test', '/api/./v1/../orders/%7Eme'),
  },
  {
    name: 'cache key of a GET',
    fn: (i: number) => responseCacheKey('GET', 'shop.test:8080', '/api/orders', `id=${i & 1023}`),
  },
]

const rows = cases.map((c) => ({ name: c.name, ns: cpuNsPerOp(c.fn) }))
report({
  package: 'lb',
  name: 'edge-cpu',
  title:
    'Edge parsing of the proxy, CPU time per request (process CPU time over 2M calls, median of 7)',
  columns: ['case', 'CPU ns / request'],
  rows: rows.map((r) => [r.name, fmt(r.ns)]),
  notes: [
    'For scale: the proxy spends about 30 µs of CPU per request on loopback (proxy.bench.ts).',
  ],
  data: rows,
})

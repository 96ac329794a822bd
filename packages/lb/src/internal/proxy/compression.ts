import type { OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { Transform } from 'node:stream'
import { createBrotliCompress, createGzip, constants as zlibConstants } from 'node:zlib'

/** The resolved compression settings of the proxy. */
export interface CompressionSettings {
  readonly threshold: number
  readonly brotli: boolean
  readonly level: number
}

const COMPRESSIBLE =
  /^(text\/|application\/(json|javascript|xml|x-javascript|[a-z.+-]*\+(json|xml))|image\/svg\+xml)/i

/**
 * Compresses a response when it is compressible and the client accepts a coding: rewrites the
 * response headers (`Content-Encoding`, `Vary`, no `Content-Length`) and returns the compressor,
 * already piped to `res`; returns `undefined` when the response goes as it is.
 */
export function compressor(
  settings: CompressionSettings,
  acceptEncoding: string,
  out: OutgoingHttpHeaders,
  res: ServerResponse,
): Transform | undefined {
  const type = out['content-type']
  const length = out['content-length']
  if (
    typeof type !== 'string' ||
    !COMPRESSIBLE.test(type) ||
    (length !== undefined && Number(length) < settings.threshold)
  ) {
    return undefined
  }
  const coding =
    settings.brotli && /\bbr\b/.test(acceptEncoding)
      ? 'br'
      : /\bgzip\b/.test(acceptEncoding) && !/gzip;\s*q=0(\.0*)?(,|$)/.test(acceptEncoding)
        ? 'gzip'
        : undefined
  if (coding === undefined) return undefined
  delete out['content-length']
  out['content-encoding'] = coding
  const vary = out.vary
  out.vary = vary === undefined ? 'accept-encoding' : `${String(vary)}, accept-encoding`
  const stream =
    coding === 'br'
      ? createBrotliCompress({ params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 4 } })
      : createGzip({ level: settings.level })
  stream.pipe(res)
  stream.on('error', (e) => res.destroy(e))
  return stream
}

import { createTestTelemetry } from '@ballast/testkit/otel'
import { context, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api'
import { afterAll, describe, expect, it } from 'vitest'
import {
  errorType,
  extractContext,
  injectContext,
  inSpan,
  observe,
  telemetry,
} from '../src/index.js'

const otel = createTestTelemetry()
afterAll(() => otel.shutdown())

describe('telemetry', () => {
  it('observe() reads every instrument from one callback at collection time, and stops when told', async () => {
    const { meter } = telemetry('@ballast/test', otel)
    let hits = 3
    const stop = observe(
      meter,
      {
        'test.hits': { kind: 'counter', description: 'Hits', unit: '{hit}' },
        'test.size': { kind: 'gauge', description: 'Size' },
      },
      (record) => {
        record('test.hits', hits, { level: 'l1' })
        record('test.size', 7)
      },
    )
    expect(await otel.value('test.hits', { level: 'l1' })).toBe(3)
    hits = 5
    expect(await otel.value('test.hits')).toBe(5)
    expect(await otel.value('test.size')).toBe(7)
    stop()
    hits = 9
    expect(await otel.value('test.hits')).not.toBe(9)
  })

  it('inSpan() makes the span active for what runs inside, and marks a failure with its code', async () => {
    const { tracer } = telemetry('@ballast/test', otel)
    otel.resetSpans()
    await inSpan(tracer, 'outer', { kind: SpanKind.CLIENT }, async () => {
      await inSpan(tracer, 'inner', {}, async () => {})
    })
    const failure = Object.assign(new Error('down'), { code: 'E_TEST_DOWN' })
    await expect(inSpan(tracer, 'failing', {}, async () => Promise.reject(failure))).rejects.toBe(
      failure,
    )
    const [inner, outer, failing] = otel.spans()
    expect(inner?.parentSpanContext?.spanId).toBe(outer?.spanContext().spanId)
    expect(failing?.status.code).toBe(SpanStatusCode.ERROR)
    expect(failing?.attributes['error.type']).toBe('E_TEST_DOWN')
  })

  it('carries a context through a carrier as W3C traceparent', async () => {
    const { tracer } = telemetry('@ballast/test', otel)
    const span = tracer.startSpan('producer')
    const headers: Record<string, unknown> = {}
    injectContext(headers, trace.setSpan(context.active(), span))
    span.end()
    expect(headers.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/)
    const extracted = trace.getSpanContext(extractContext(headers))
    expect(extracted?.traceId).toBe(span.spanContext().traceId)
    expect(extracted?.spanId).toBe(span.spanContext().spanId)
    expect(trace.getSpanContext(extractContext({ traceparent: 'garbage' }))).toBeUndefined()
  })

  it('errorType() prefers a code, then the class name', () => {
    expect(errorType(Object.assign(new Error('x'), { code: 'ECONNRESET' }))).toBe('ECONNRESET')
    expect(errorType(new TypeError('x'))).toBe('TypeError')
    expect(errorType('x')).toBe('_OTHER')
  })
})

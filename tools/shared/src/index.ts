export { type Duration, parseDuration } from './duration.js'
export { Emitter, type Listener, type Unsubscribe } from './emitter.js'
export { merge, show } from './options.js'
export {
  checkProviders,
  DURATION_BUCKETS,
  durationHistogram,
  errorType,
  extractContext,
  failSpan,
  injectContext,
  inSpan,
  type Observe,
  type ObservedInstrument,
  type ObservedKind,
  observe,
  type Telemetry,
  type TelemetryOptions,
  telemetry,
} from './telemetry.js'
export { type CheckKind, type Checks, checks, type InvalidArgumentErrorClass } from './validate.js'

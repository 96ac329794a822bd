export type { Duration, Listener, TelemetryOptions, Unsubscribe } from '@ballast/shared'
export type { SessionErrorOptions } from './errors.js'
export {
  errors,
  InvalidArgumentError,
  isSessionError,
  SessionClosedError,
  SessionError,
  SessionNotFoundError,
  SessionNotLoggedInError,
  SessionUnavailableError,
} from './errors.js'
export { RequestSession } from './requestSession.js'
export type {
  RequestHeaders,
  SessionChanges,
  SessionCookieOptions,
  SessionCreatedEvent,
  SessionData,
  SessionDestroyedEvent,
  SessionEvents,
  SessionExpiredEvent,
  SessionInfo,
  SessionRecord,
  SessionRegeneratedEvent,
  SessionStats,
  SessionStoreOptions,
  SuspicionRaisedEvent,
  SuspicionReason,
} from './sessionStore.js'
export {
  createSessionStore,
  DEFAULT_SESSION_COOKIE_OPTIONS,
  DEFAULT_SESSION_STORE_OPTIONS,
  SessionStore,
} from './sessionStore.js'

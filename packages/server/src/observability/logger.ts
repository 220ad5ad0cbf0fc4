/**
 * The pino logger. Credentials never reach a log line: the request log is built field by field
 * from the context (no headers), and the redaction paths below are a second line of defence for
 * anything logged with a request or headers attached.
 */
import { type DestinationStream, type Logger, pino } from 'pino'
import type { LogLevel } from '../config/compile.ts'

export type { Logger }

/** Paths pino replaces with "[redacted]" wherever they appear. */
export const redactPaths = [
  'authorization',
  'cookie',
  'token',
  'password',
  'secret',
  'headers.authorization',
  'headers.cookie',
  'headers["set-cookie"]',
  'headers["proxy-authorization"]',
  'req.headers.authorization',
  'req.headers.cookie',
  '*.authorization',
  '*.token',
  '*.password',
  '*.secret',
]

/** Create the gateway logger; `destination` defaults to an asynchronous stdout writer. */
export function createLogger(
  level: LogLevel,
  destination: DestinationStream = pino.destination({ dest: 1, sync: false }),
): Logger {
  return pino(
    {
      level,
      base: { service: '4runr' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: redactPaths, censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  )
}

/** The effective log level: RUNR_LOG_LEVEL overrides the config (DESIGN §18). */
export function effectiveLogLevel(configured: LogLevel, env: NodeJS.ProcessEnv): LogLevel {
  const fromEnv = env['RUNR_LOG_LEVEL']
  const levels: readonly string[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']
  return fromEnv !== undefined && levels.includes(fromEnv) ? (fromEnv as LogLevel) : configured
}

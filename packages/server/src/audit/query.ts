/**
 * The query string of `GET /v1/audit` and `/v1/audit/export`, checked field by field: a bad
 * filter is a 400 naming each problem, never a silently ignored or widened query.
 */
import { GatewayError } from '../errors/gateway-error.ts'
import type { AuditCursor, AuditFilter, AuditPageQuery } from './ledger-store.ts'

export interface Problem {
  path: string
  message: string
}

const kinds = new Set(['call', 'token', 'admin'])
const decisions = new Set(['allow', 'deny', 'approval_required'])
const known = new Set([
  'principal',
  'target',
  'kind',
  'decision',
  'status',
  'from',
  'to',
  'instance',
  'limit',
  'cursor',
  'order',
])
export const maxLimit = 1000

/** The opaque cursor for "after this entry". */
export function cursorOf(entry: AuditCursor): string {
  return Buffer.from(JSON.stringify([entry.time, entry.instance, entry.seq])).toString('base64url')
}

function parseCursor(text: string): AuditCursor | undefined {
  try {
    const value = JSON.parse(Buffer.from(text, 'base64url').toString('utf8')) as unknown
    if (!Array.isArray(value) || value.length !== 3) return undefined
    const [time, instance, seq] = value as unknown[]
    if (!Number.isSafeInteger(time) || typeof instance !== 'string' || !Number.isSafeInteger(seq))
      return undefined
    return { time: time as number, instance, seq: seq as number }
  } catch {
    return undefined
  }
}

/** RFC 3339 or milliseconds since the epoch. */
function parseTime(text: string): number | undefined {
  if (/^\d{1,15}$/.test(text)) return Number(text)
  if (!/^\d{4}-\d{2}-\d{2}(T[\d:.]+(Z|[+-]\d{2}:\d{2})?)?$/.test(text)) return undefined
  const ms = Date.parse(text)
  return Number.isFinite(ms) ? ms : undefined
}

/**
 * The page query for `query` (Fastify's parsed query string). Throws bad_request with
 * `details.problems` listing every bad field.
 */
export function parseAuditQuery(
  query: Record<string, unknown>,
  defaults: { order: 'asc' | 'desc'; limit: number },
): AuditPageQuery {
  const problems: Problem[] = []
  const text: Record<string, string> = {}
  for (const [key, value] of Object.entries(query)) {
    if (!known.has(key)) problems.push({ path: key, message: 'unknown filter' })
    else if (typeof value !== 'string') problems.push({ path: key, message: 'give it once' })
    else if (value.length > 256) problems.push({ path: key, message: 'at most 256 characters' })
    else text[key] = value
  }
  const filter: AuditFilter = {}
  for (const key of ['principal', 'target', 'instance'] as const) {
    if (text[key] === undefined) continue
    if (text[key] === '') problems.push({ path: key, message: 'must not be empty' })
    else filter[key] = text[key]
  }
  if (text['kind'] !== undefined) {
    if (kinds.has(text['kind'])) filter.kind = text['kind']
    else problems.push({ path: 'kind', message: 'expected call, token or admin' })
  }
  if (text['decision'] !== undefined) {
    if (decisions.has(text['decision'])) filter.decision = text['decision']
    else problems.push({ path: 'decision', message: 'expected allow, deny or approval_required' })
  }
  const status = text['status']
  if (status !== undefined) {
    if (/^[1-5]\d\d$/.test(status)) filter.status = { exact: Number(status) }
    else if (/^[1-5]xx$/i.test(status)) filter.status = { class: Number(status[0]) }
    else problems.push({ path: 'status', message: 'expected an HTTP status (403) or a class (4xx)' })
  }
  for (const key of ['from', 'to'] as const) {
    if (text[key] === undefined) continue
    const ms = parseTime(text[key])
    if (ms === undefined)
      problems.push({ path: key, message: 'expected an RFC 3339 time or milliseconds since the epoch' })
    else filter[key] = ms
  }
  if (filter.from !== undefined && filter.to !== undefined && filter.from >= filter.to)
    problems.push({ path: 'to', message: 'must be after from' })
  let limit = defaults.limit
  if (text['limit'] !== undefined) {
    const n = Number(text['limit'])
    if (/^\d+$/.test(text['limit']) && n >= 1 && n <= maxLimit) limit = n
    else problems.push({ path: 'limit', message: `expected an integer from 1 to ${maxLimit}` })
  }
  let order = defaults.order
  if (text['order'] !== undefined) {
    if (text['order'] === 'asc' || text['order'] === 'desc') order = text['order']
    else problems.push({ path: 'order', message: 'expected asc or desc' })
  }
  let after: AuditCursor | undefined
  if (text['cursor'] !== undefined) {
    after = parseCursor(text['cursor'])
    if (after === undefined) problems.push({ path: 'cursor', message: 'not a cursor this API returned' })
  }
  if (problems.length > 0)
    throw new GatewayError('bad_request', 'The audit query is invalid.', { details: { problems } })
  return { filter, order, limit, ...(after === undefined ? {} : { after }) }
}

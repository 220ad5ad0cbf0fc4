/**
 * What the two stores share besides the schema: turning rows into records, the conflict
 * messages, and argument checks, so both answer alike.
 */
import {
  type Agent,
  type AgentKey,
  type Approval,
  type ApprovalStatus,
  type DecideResult,
  type IdempotencyRecord,
  type QuotaWindow,
  StoreConflictError,
  type StoredPolicy,
} from './types.ts'

/**
 * Groups rows of `agents left join agent_keys` (ordered by agent, then key) into agents, keeping
 * the row order. `toKey` returns undefined for an agent without keys (the null side of the join).
 */
export function groupAgents<R extends { id: string }>(
  rows: Iterable<R>,
  toAgent: (row: R) => Agent,
  toKey: (row: R) => AgentKey | undefined,
): Agent[] {
  const agents = new Map<string, Agent>()
  for (const row of rows) {
    let agent = agents.get(row.id)
    if (agent === undefined) {
      agent = toAgent(row)
      agents.set(row.id, agent)
    }
    const key = toKey(row)
    if (key !== undefined) agent.keys.push(key)
  }
  return [...agents.values()]
}

/** The conflicts a store reports, worded the same by both. */
export const conflict = {
  agentId: (id: string) => new StoreConflictError(`agent id ${JSON.stringify(id)} is taken`),
  agentName: (name: string) => new StoreConflictError(`agent name ${JSON.stringify(name)} is taken`),
  agentKey: (agentId: string, kid: string) =>
    new StoreConflictError(
      `agent ${JSON.stringify(agentId)} already has a key with kid ${JSON.stringify(kid)}`,
    ),
  signingKey: (kid: string) => new StoreConflictError(`signing key kid ${JSON.stringify(kid)} is taken`),
  approvalId: (id: string) => new StoreConflictError(`approval id ${JSON.stringify(id)} is taken`),
  policyVersion: (name: string, expected: number, current: number) =>
    new StoreConflictError(
      current === 0
        ? `policy ${JSON.stringify(name)} does not exist (expected version ${expected})`
        : expected === 0
          ? `policy ${JSON.stringify(name)} already exists (version ${current})`
          : `policy ${JSON.stringify(name)} is at version ${current}, expected ${expected}`,
    ),
  secretChanged: (name: string, agentId: string | null) =>
    new StoreConflictError(
      `secret ${JSON.stringify(name)}${agentId === null ? '' : ` of agent ${JSON.stringify(agentId)}`} ` +
        'changed since it was read',
    ),
}

/**
 * Throws the conflict for the first kid that appears twice among keys given together: the
 * database would only say that some (agent_id, kid) pair repeated, not which.
 */
export function assertDistinctKids(agentId: string, keys: readonly AgentKey[]): void {
  const seen = new Set<string>()
  for (const { kid } of keys) {
    if (seen.has(kid)) throw conflict.agentKey(agentId, kid)
    seen.add(kid)
  }
}

/** A page size: undefined means no limit; anything but a non-negative integer is a caller bug. */
export function checkLimit(limit: number | undefined): number | undefined {
  if (limit !== undefined && !(Number.isInteger(limit) && limit >= 0))
    throw new RangeError(`limit must be a non-negative integer, got ${limit}`)
  return limit
}

/** A count or limit: anything but a non-negative safe integer is a caller bug. */
export function checkCount(value: number, what: string): number {
  if (!Number.isSafeInteger(value) || value < 0)
    throw new RangeError(`${what} must be a non-negative integer, got ${value}`)
  return value
}

/** A quota window: integer bounds, the start before the end. */
export function checkWindow(window: QuotaWindow): void {
  const { windowStart, windowEnd } = window
  if (!Number.isSafeInteger(windowStart) || !Number.isSafeInteger(windowEnd) || windowStart >= windowEnd)
    throw new RangeError(
      `a quota window needs integer bounds with start < end, got ${windowStart}..${windowEnd}`,
    )
}

/** An expectedVersion: 0 (must not exist) or a version number. */
export function checkExpectedVersion(version: number | undefined): number | undefined {
  if (version !== undefined) checkCount(version, 'expectedVersion')
  return version
}

/**
 * JSON text for a value the store keeps as JSON. TypeError for what JSON cannot carry (undefined,
 * a function, a BigInt, a cycle), so the caller learns of it rather than storing something else.
 */
export function jsonText(value: unknown, what: string): string {
  let text: string | undefined
  try {
    text = JSON.stringify(value)
  } catch (err) {
    throw new TypeError(`${what} is not JSON: ${(err as Error).message}`)
  }
  if (text === undefined) throw new TypeError(`${what} is not JSON`)
  return text
}

/** JSON text of a policy document, which must be an object. */
export function policyDocumentText(document: unknown): string {
  if (typeof document !== 'object' || document === null || Array.isArray(document))
    throw new TypeError('a policy document must be a JSON object')
  return jsonText(document, 'the policy document')
}

/** A policy row with its document still as JSON text. */
export interface PolicyRow extends Omit<StoredPolicy, 'document'> {
  document: string
}

/** A policy record from its row, with a freshly parsed document. */
export function toPolicy(row: PolicyRow): StoredPolicy {
  return {
    name: row.name,
    version: row.version,
    document: JSON.parse(row.document),
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
  }
}

/** An approval row: JSON still as text, the stored status (never 'expired'). */
export interface ApprovalRow extends Omit<Approval, 'target' | 'summary' | 'status'> {
  target: string
  summary: string
  status: Exclude<ApprovalStatus, 'expired'>
}

/** The approval as read at `now`: pending or approved past expiresAt reads as expired. */
export function toApproval(row: ApprovalRow, now: number): Approval {
  const settled = row.status === 'rejected' || row.status === 'used'
  return {
    id: row.id,
    agentId: row.agentId,
    target: JSON.parse(row.target),
    requestHash: row.requestHash,
    summary: JSON.parse(row.summary),
    policy: row.policy,
    rule: row.rule,
    status: settled || row.expiresAt > now ? row.status : 'expired',
    createdAt: row.createdAt,
    expiresAt: row.expiresAt,
    decidedAt: row.decidedAt,
    decidedBy: row.decidedBy,
    note: row.note,
    usedAt: row.usedAt,
  }
}

/** Why a decision changed nothing, from the record as it stands (undefined: there is none). */
export function refusedDecision(approval: Approval | undefined): DecideResult {
  if (approval === undefined) return { outcome: 'not_found' }
  // Approved-then-expired reads 'expired' too, but it was decided: that is what the caller must hear.
  if (approval.status === 'expired' && approval.decidedAt === null) return { outcome: 'expired', approval }
  return { outcome: 'already_decided', approval }
}

const approvalStatuses: ReadonlySet<string> = new Set(['pending', 'approved', 'rejected', 'used', 'expired'])

/** A status filter; a string that is no status is a caller bug. */
export function checkApprovalStatus(status: ApprovalStatus | undefined): ApprovalStatus | undefined {
  if (status !== undefined && !approvalStatuses.has(status))
    throw new TypeError(`unknown approval status ${JSON.stringify(status)}`)
  return status
}

/**
 * The stored agent_id of a secret: '' for the tool-wide value (a primary key cannot hold null).
 * An empty agent id would collide with it, so it is refused.
 */
export function secretAgentColumn(agentId: string | null | undefined): string {
  if (agentId === '') throw new TypeError('a secret agentId must be a non-empty string or null')
  return agentId ?? ''
}

/** The agentId of a stored secret: null for the tool-wide value. */
export function secretAgentId(column: string): string | null {
  return column === '' ? null : column
}

/** One row of idempotency_keys; `H` is how the driver returns the headers column. */
export interface IdempotencyRow<H> {
  principal: string
  key: string
  requestHash: string
  owner: string
  state: 'pending' | 'done'
  status: number | null
  headers: H | null
  body: Buffer | null
  createdAt: number
  expiresAt: number
  leaseUntil: number
}

/** The record of a row; `headersOf` reads the driver's headers value. */
export function toIdempotency<H>(
  row: IdempotencyRow<H>,
  headersOf: (value: H) => Record<string, string>,
): IdempotencyRecord {
  const { status, headers, body, ...rest } = row
  return {
    ...rest,
    answer:
      status === null
        ? null
        : { status, headers: headers === null ? {} : headersOf(headers), body: body ?? Buffer.alloc(0) },
  }
}

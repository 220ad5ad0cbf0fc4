/**
 * What the two stores share besides the schema: turning joined agent/key rows into records, the
 * conflict messages, and argument checks, so both answer alike.
 */
import { type Agent, type AgentKey, StoreConflictError } from './types.ts'

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

/**
 * The policy micro-benchmark (issue: policy engine): 1,000 policies and 10,000 agents, one
 * compiled decision whose deciding rule has a CEL guard, timed in process. Each sample times a
 * batch of decisions for different agents (a single decision is below the timer's resolution);
 * the median and p99 are of the per-decision time of those batches.
 *
 *   node --import tsx bench/policy-decision.ts     # prints the figures; npm run bench runs it too
 */
import { compilePolicy } from '../packages/server/src/policy/compile.ts'
import { type AgentFacts, type DecisionInput, PolicySet } from '../packages/server/src/policy/policy-set.ts'

export interface PolicyDecisionResult {
  policies: number
  agents: number
  decisions: number
  medianUs: number
  p99Us: number
}

const POLICIES = 1000
const AGENTS = 10_000
const BATCH = 1000

function buildSet(): PolicySet {
  const compiled = []
  for (let i = 0; i < POLICIES; i++) {
    // A mix of selectors (labels, names, everyone) and targets, as a large deployment would have.
    const agents =
      i % 10 === 0
        ? { names: [`agent-${i}`, `agent-${i + 1}`] }
        : { labels: { team: `team-${i % 200}`, tier: `t${i % 3}` } }
    const document = {
      name: `policy-${i}`,
      agents,
      allow: [
        {
          tool: 'serpapi',
          actions: ['search'],
          intents: ['research', 'support'],
          when: `args.num <= ${10 + (i % 5)} && args.q.size() < 200`,
        },
        { tool: 'http_fetch', actions: ['get'], domains: { allow: [`*.site-${i}.example`] } },
        { channel: `channel-${i % 50}`, paths: ['/orders/*'], methods: ['GET' as const] },
      ],
      deny: [{ tool: 'gmail', actions: ['send'], when: 'args.to.endsWith("@competitor.example")' }],
    }
    const result = compilePolicy(document, 'config', 'bench')
    if (!result.ok) throw new Error(JSON.stringify(result.problems))
    compiled.push(result.policy)
  }
  return new PolicySet(compiled, 'bench')
}

function buildAgents(): AgentFacts[] {
  const agents: AgentFacts[] = []
  for (let i = 0; i < AGENTS; i++) {
    agents.push({
      id: `agt_${i}`,
      name: `agent-${i}`,
      labels: { team: `team-${i % 200}`, tier: `t${i % 3}`, region: `r${i % 7}` },
      roles: [],
    })
  }
  return agents
}

export function measurePolicyDecision(samples = 300): PolicyDecisionResult {
  const set = buildSet()
  const agents = buildAgents()
  const inputs: DecisionInput[] = agents.map((agent, i) => ({
    agent,
    scope: 'serpapi:search channel:channel-1',
    intent: 'research',
    // As the verifier hands them over: one claims object per token, reused by its every call.
    claims: { sub: agent.id, jti: `jti-${i}`, scope: 'serpapi:search channel:channel-1', intent: 'research' },
    target: { kind: 'tool', tool: 'serpapi', action: 'search' },
    args: { q: `query ${i}`, num: 5 },
    request: { method: 'POST', path: '/v1/tools/serpapi/search', bytes: 40, ip: '127.0.0.1' },
    now: Date.now(),
  }))
  // Every agent's decision once, so the per-agent memo is built (as it is after the first call).
  let allowed = 0
  for (const input of inputs) if (set.decide(input).decision === 'allow') allowed++
  if (allowed < AGENTS * 0.9)
    throw new Error(`only ${allowed} of ${AGENTS} decisions allowed: the setup is wrong`)
  const perDecision: number[] = []
  let cursor = 0
  for (let s = 0; s < samples; s++) {
    const start = process.hrtime.bigint()
    for (let i = 0; i < BATCH; i++) {
      set.decide(inputs[cursor]!)
      cursor = (cursor + 7919) % AGENTS
    }
    perDecision.push(Number(process.hrtime.bigint() - start) / BATCH / 1000)
  }
  perDecision.sort((a, b) => a - b)
  return {
    policies: POLICIES,
    agents: AGENTS,
    decisions: samples * BATCH,
    medianUs: perDecision[Math.floor(perDecision.length / 2)]!,
    p99Us: perDecision[Math.floor(perDecision.length * 0.99)]!,
  }
}

export const POLICY_MEDIAN_LIMIT_US = 5

export function formatPolicyDecision(r: PolicyDecisionResult): string {
  return `policy decision (${r.policies} policies, ${r.agents} agents, CEL guard): median ${r.medianUs.toFixed(2)} µs, p99 ${r.p99Us.toFixed(2)} µs over ${r.decisions} decisions`
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const result = measurePolicyDecision()
  console.log(formatPolicyDecision(result))
  console.log(
    `${result.medianUs < POLICY_MEDIAN_LIMIT_US ? 'PASS' : 'FAIL'}  median under ${POLICY_MEDIAN_LIMIT_US} µs`,
  )
}

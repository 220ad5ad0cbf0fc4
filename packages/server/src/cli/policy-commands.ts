/**
 * `4runr policy test`: ask the running gateway how it would decide a call, and why (DESIGN §7):
 * the decision, the deciding rule, and for every other rule of the agent's policies why it did
 * not match. Nothing is executed and no quota is counted.
 */
import { adminRequest } from './admin-client.ts'
import { CliError, type CliIo } from './identity-commands.ts'

export interface PolicyTestOptions {
  agent: string
  tool?: string
  action?: string
  channel?: string
  path?: string
  method?: string
  args?: string
  intent?: string
  scope?: string
  json?: boolean
  admin?: string
}

interface Explanation {
  decision: string
  reason: string
  policy: string | null
  rule: string | null
  reasons: string[]
  candidates: { policy: string; rule: string; effect: string; matched: boolean; reasons: string[] }[]
}

export async function policyTest(io: CliIo, opts: PolicyTestOptions): Promise<void> {
  let args: unknown
  if (opts.args !== undefined) {
    try {
      args = JSON.parse(opts.args)
    } catch {
      throw new CliError('--args must be JSON, e.g. \'{"q":"weather","num":5}\'')
    }
  }
  if ((opts.tool === undefined) === (opts.channel === undefined))
    throw new CliError('name a --tool (with --action) or a --channel')
  if (opts.tool !== undefined && opts.action === undefined) throw new CliError('--tool needs --action')
  const body: Record<string, unknown> = { agent: opts.agent }
  for (const key of ['tool', 'action', 'channel', 'path', 'method', 'intent', 'scope'] as const) {
    if (opts[key] !== undefined) body[key] = opts[key]
  }
  if (args !== undefined) body['args'] = args
  const answer = (await adminRequest(
    io,
    opts.admin,
    'POST',
    '/v1/policies/evaluate',
    body,
  )) as unknown as Explanation
  if (opts.json === true) {
    io.out(`${JSON.stringify(answer, null, 2)}\n`)
    return
  }
  const decided = answer.rule === null ? 'no rule (default deny)' : `rule ${answer.rule}`
  io.out(`${answer.decision.toUpperCase()} (${answer.reason}) by ${decided}\n`)
  for (const reason of answer.reasons) io.out(`  ${reason}\n`)
  if (answer.candidates.length > 0) io.out('\ncandidates:\n')
  for (const candidate of answer.candidates) {
    const mark = candidate.matched ? 'matched' : 'no match'
    io.out(`  ${candidate.rule} (${candidate.effect}): ${mark}\n`)
    for (const reason of candidate.reasons) io.out(`      ${reason}\n`)
  }
  // A denial is an answer, not a failure of the command; scripts read --json or the first word.
}

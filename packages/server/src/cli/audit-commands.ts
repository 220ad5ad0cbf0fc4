/**
 * `4runr audit verify` and `4runr audit tail`: the ledger as the running gateway sees it, through
 * the admin API (DESIGN §13). verify exits 1 when a chain is broken, so scripts and cron jobs can
 * alert on it; tail polls for new entries until interrupted.
 */
import { cursorOf } from '../audit/query.ts'
import type { VerifyReport } from '../audit/verify.ts'
import { adminRequest } from './admin-client.ts'
import { CliError, type CliIo } from './identity-commands.ts'

export interface AuditVerifyOptions {
  since?: string
  instance?: string
  json?: boolean
  admin?: string
}

export async function auditVerify(io: CliIo, opts: AuditVerifyOptions): Promise<void> {
  const query = new URLSearchParams()
  if (opts.since !== undefined) {
    if (!/^[1-9]\d*$/.test(opts.since)) throw new CliError('--since must be a sequence number from 1')
    query.set('since', opts.since)
  }
  if (opts.instance !== undefined) query.set('instance', opts.instance)
  const suffix = query.size === 0 ? '' : `?${query}`
  const report = (await adminRequest(
    io,
    opts.admin,
    'GET',
    `/v1/audit/verify${suffix}`,
  )) as unknown as VerifyReport
  if (opts.json === true) io.out(`${JSON.stringify(report, null, 2)}\n`)
  else {
    if (report.chains.length === 0) io.out('no audit entries yet\n')
    for (const chain of report.chains) {
      const range = chain.firstSeq === null ? 'no entries' : `entries ${chain.firstSeq}–${chain.lastSeq}`
      if (chain.broken !== undefined) {
        io.out(`BROKEN  ${chain.instance}: first broken entry ${chain.broken.seq}: ${chain.broken.reason}\n`)
        continue
      }
      const tail =
        chain.unsigned === 0 ? 'all signed' : `${chain.unsigned} after the last checkpoint not yet signed`
      io.out(`OK      ${chain.instance}: ${range}, ${chain.checkpoints} checkpoints, ${tail}\n`)
    }
  }
  if (!report.ok) process.exitCode = 1
}

export interface AuditTailOptions {
  principal?: string
  target?: string
  decision?: string
  kind?: string
  interval?: string
  json?: boolean
  admin?: string
}

interface Entry {
  seq: number
  time: string
  instance: string
  principal: string | null
  kind: string
  target: string | null
  action: string | null
  decision: string | null
  rule: string | null
  status: number
  requestId: string | null
}

function line(e: Entry): string {
  const decision = e.decision ?? '-'
  const rule = e.rule === null ? '' : ` (${e.rule})`
  return `${e.time} ${e.instance}#${e.seq} ${e.principal ?? '-'} ${e.kind} ${e.target ?? '-'} ${e.action ?? '-'} ${decision}${rule} ${e.status}\n`
}

/** Print the last entries, then every new one as it is written; runs until the process is stopped. */
export async function auditTail(io: CliIo, opts: AuditTailOptions): Promise<void> {
  const intervalMs = opts.interval === undefined ? 1000 : Number(opts.interval)
  if (!Number.isInteger(intervalMs) || intervalMs < 100)
    throw new CliError('--interval must be at least 100 (ms)')
  const filters = new URLSearchParams()
  for (const key of ['principal', 'target', 'decision', 'kind'] as const) {
    if (opts[key] !== undefined) filters.set(key, opts[key])
  }
  const print = (e: Entry) => io.out(opts.json === true ? `${JSON.stringify(e)}\n` : line(e))
  const started = Date.now()
  const first = (await adminRequest(io, opts.admin, 'GET', `/v1/audit?${filters}&limit=20&order=desc`)) as {
    entries?: Entry[]
  }
  const recent = (first.entries ?? []).reverse()
  for (const e of recent) print(e)
  // The newest entry seen is where the next poll starts.
  let cursor = recent.length === 0 ? undefined : cursorFor(recent.at(-1)!)
  for (;;) {
    await new Promise((done) => setTimeout(done, intervalMs))
    const query = new URLSearchParams(filters)
    query.set('order', 'asc')
    query.set('limit', '500')
    if (cursor !== undefined) query.set('cursor', cursor)
    else query.set('from', String(started))
    const page = (await adminRequest(io, opts.admin, 'GET', `/v1/audit?${query}`)) as { entries?: Entry[] }
    for (const e of page.entries ?? []) {
      print(e)
      cursor = cursorFor(e)
    }
  }
}

/** The cursor for "after this entry", as GET /v1/audit hands it out. */
function cursorFor(e: Entry): string {
  return cursorOf({ time: Date.parse(e.time), instance: e.instance, seq: e.seq })
}

/**
 * Admin routes for the audit ledger (DESIGN §3, §13): `GET /v1/audit` (filters, cursor paging),
 * `GET /v1/audit/export` (NDJSON, streamed page by page), `GET /v1/audit/verify` (the chain and
 * checkpoint signatures recomputed). The plugin also records every admin change and refusal in
 * the ledger, and refuses changes while the ledger cannot be written (audit.onFailure: refuse);
 * reads keep working, so an operator can still look.
 */
import { Readable } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import type { AuditService } from '../audit/audit-service.ts'
import { entryView } from '../audit/entry.ts'
import { cursorOf, parseAuditQuery } from '../audit/query.ts'
import { verifyLedger } from '../audit/verify.ts'
import { GatewayError } from '../errors/gateway-error.ts'
import { errorBody } from '../errors/write-error.ts'

const reads = new Set(['GET', 'HEAD', 'OPTIONS'])

function verifyOptions(query: Record<string, unknown>): { since?: number; instance?: string } {
  const problems: { path: string; message: string }[] = []
  const out: { since?: number; instance?: string } = {}
  for (const [key, value] of Object.entries(query)) {
    if (key === 'since' && typeof value === 'string' && /^[1-9]\d{0,15}$/.test(value))
      out.since = Number(value)
    else if (key === 'since') problems.push({ path: 'since', message: 'expected a sequence number from 1' })
    else if (key === 'instance' && typeof value === 'string' && value !== '' && value.length <= 64)
      out.instance = value
    else if (key === 'instance') problems.push({ path: 'instance', message: 'expected an instance name' })
    else problems.push({ path: key, message: 'unknown parameter' })
  }
  if (problems.length > 0)
    throw new GatewayError('bad_request', 'The verify query is invalid.', { details: { problems } })
  return out
}

export function auditAdminRoutes(audit: AuditService) {
  return (app: FastifyInstance): void => {
    app.addHook('preHandler', async (request) => {
      if (reads.has(request.method)) return
      const refusal = audit.refusal()
      if (refusal !== undefined) throw refusal
    })
    // onSend sees every answer, refusals of the admin key included, with its final status.
    app.addHook('onSend', async (request, reply, payload) => {
      const ctx = request.runr
      if (ctx === undefined) return payload
      const pending = audit.admin({
        method: request.method,
        route: request.routeOptions.url,
        params: (request.params ?? {}) as Record<string, string>,
        body: request.body,
        status: reply.statusCode,
        requestId: ctx.requestId,
        correlationId: ctx.correlationId,
        durationMs: performance.now() - ctx.startedAt,
      })
      const refused = pending === undefined ? undefined : await pending
      if (refused === undefined) return payload
      // durability: sync and the entry could not be written: the change happened, but the
      // operator is told that it went unrecorded.
      ctx.errorCode = refused.code
      reply.code(refused.status).type('application/json; charset=utf-8')
      return errorBody(refused, ctx.requestId)
    })

    app.get('/v1/audit', async (request) => {
      const query = parseAuditQuery(request.query as Record<string, unknown>, { order: 'desc', limit: 100 })
      const entries = await audit.store.page(query)
      return {
        entries: entries.map(entryView),
        next: entries.length === query.limit ? cursorOf(entries.at(-1)!) : null,
      }
    })

    app.get('/v1/audit/export', async (request, reply) => {
      const query = parseAuditQuery(request.query as Record<string, unknown>, { order: 'asc', limit: 1000 })
      const store = audit.store
      // Pages of `limit` entries, one line each, until the filter is exhausted.
      async function* lines(): AsyncGenerator<string> {
        let after = query.after
        for (;;) {
          const page = await store.page({ ...query, ...(after === undefined ? {} : { after }) })
          if (page.length === 0) return
          yield `${page.map((e) => JSON.stringify(entryView(e))).join('\n')}\n`
          if (page.length < query.limit) return
          after = page.at(-1)!
        }
      }
      reply.type('application/x-ndjson').header('cache-control', 'no-store')
      return Readable.from(lines())
    })

    app.get('/v1/audit/verify', async (request) => {
      const options = verifyOptions(request.query as Record<string, unknown>)
      // Entries still in the open batch are written first, so the report covers them.
      await audit.ledger.flush()
      return verifyLedger(audit.store, audit.masterKeys, options)
    })
  }
}

/**
 * A fake SerpAPI: `GET /search.json` answers the documented Google-results shape, derived only
 * from the query (`q`, `num`, `engine`, `location`), so equal searches get equal answers and a
 * response cache can be tested. Some snippets carry an e-mail address, a phone number and a
 * test card number, for the gateway's redaction filters to catch. The key travels as the
 * `api_key` query parameter, as SerpAPI expects; it is never recorded.
 */
import { createHash } from 'node:crypto'
import { checkSecret, type FakeReply, type FakeServer, startFakeServer } from './fake-server.ts'

export interface FakeSerpApiOptions {
  /** The key the gateway must send as `api_key`. */
  apiKey: string
  host?: string
  port?: number
}

const invalidKey = 'Invalid API key. Your API key should be here: https://serpapi.com/manage-api-key'
const defaultNum = 10
const maxNum = 100
const domains = ['example.com', 'example.org', 'example.net']
// Reserved for documentation and tests: RFC 2606 domains, a 555-01xx number, Visa's test card.
const sensitive = [
  'Questions? Write to contact@example.com or call +1 (555) 010-0199 on weekdays.',
  'Billing used the test card 4111 1111 1111 1111; receipts go to billing@example.org.',
]

function hash(text: string): Buffer {
  return createHash('sha256').update(text).digest()
}

function slug(q: string): string {
  return (
    q
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 40) || 'result'
  )
}

function json(status: number, body: unknown): FakeReply {
  return { status, body }
}

function search(url: string, query: Record<string, string>): FakeReply {
  const q = query.q
  if (q === undefined || q.trim() === '') return json(400, { error: 'Missing query `q` parameter.' })
  const engine = query.engine ?? 'google'
  if (!/^[a-z_]{1,40}$/.test(engine)) return json(400, { error: `Unsupported \`${engine}\` search engine.` })
  const parsed = Number.parseInt(query.num ?? '', 10)
  const num = Number.isFinite(parsed) ? Math.min(Math.max(parsed, 1), maxNum) : defaultNum
  const location = query.location

  const digest = hash(`${engine}\0${q}\0${num}\0${location ?? ''}`)
  const id = digest.subarray(0, 12).toString('hex')
  const totalResults = 1000 + (digest.readUInt32BE(12) % 9_000_000)
  const when = '2025-01-01 00:00:00 UTC'
  const name = slug(q)
  const organic = Array.from({ length: num }, (_, i) => {
    const position = i + 1
    const domain = domains[i % domains.length]!
    const link = `https://${domain}/${name}/${position}`
    const extra = position === 2 ? ` ${sensitive[0]}` : position === 4 ? ` ${sensitive[1]}` : ''
    return {
      position,
      title: `${q}: result ${position}`,
      link,
      displayed_link: `https://${domain} › ${name} › ${position}`,
      snippet: `Result ${position} of a fake search for "${q}".${extra}`,
      source: domain,
    }
  })
  const googleUrl = new URL('https://www.google.com/search')
  googleUrl.searchParams.set('q', q)
  googleUrl.searchParams.set('num', String(num))
  return json(200, {
    search_metadata: {
      id,
      status: 'Success',
      json_endpoint: `${url}/searches/${id}.json`,
      created_at: when,
      processed_at: when,
      google_url: googleUrl.href,
      total_time_taken: 0.42,
    },
    search_parameters: {
      engine,
      q,
      google_domain: 'google.com',
      device: 'desktop',
      ...(query.num === undefined ? {} : { num: query.num }),
      ...(location === undefined ? {} : { location_requested: location, location_used: location }),
    },
    search_information: {
      organic_results_state: 'Results for exact spelling',
      query_displayed: q,
      total_results: totalResults,
      time_taken_displayed: 0.31,
    },
    organic_results: organic,
  })
}

/** Start a fake SerpAPI on a free loopback port (or `host`/`port`). */
export function startFakeSerpApi(options: FakeSerpApiOptions): Promise<FakeServer> {
  let url = ''
  // The Search Archive API (`json_endpoint`) answers a past search again; bounded like the log.
  const archive = new Map<string, unknown>()
  const started = startFakeServer({
    host: options.host,
    port: options.port,
    secretQueryParams: ['api_key'],
    authorize: (_headers, query) => checkSecret(query.get('api_key') ?? undefined, options.apiKey),
    errorBody: (_status, message) => ({ error: message }),
    handle(req) {
      const archived = /^\/searches\/([0-9a-f]{24})\.json$/.exec(req.path)
      if (req.method !== 'GET' || (req.path !== '/search.json' && archived === null)) {
        return json(404, { error: `Unknown endpoint ${req.method} ${req.path}.` })
      }
      if (!req.authorized) return json(401, { error: invalidKey })
      if (archived !== null) {
        const found = archive.get(archived[1]!)
        return found === undefined ? json(404, { error: 'Search not found.' }) : json(200, found)
      }
      const reply = search(url, req.query)
      if (reply.status === 200) {
        const body = reply.body as { search_metadata: { id: string } }
        archive.delete(body.search_metadata.id)
        archive.set(body.search_metadata.id, body)
        if (archive.size > 1000) archive.delete(archive.keys().next().value!)
      }
      return reply
    },
  })
  return started.then((server) => {
    url = server.url
    return server
  })
}

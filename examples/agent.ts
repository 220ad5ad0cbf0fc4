/**
 * A small research agent on the TypeScript SDK: it gets a token with its own key, searches the
 * web for a few topics, reads a page for each, and copes with what a gateway answers when it
 * says no: a policy denial (it reads another page instead) and a rate limit or used-up quota
 * (it waits when the wait is short and stops cleanly when it is not).
 *
 * Against the demo (`npm start`), in another terminal, from the repository root:
 *
 *   export RUNR_ADMIN_KEY=…                       # printed by the first `npm start`
 *   npx 4runr agent create --name research-bot    # writes research-bot.key.json
 *   npx tsx examples/agent.ts
 *
 * Settings: RUNR_URL (default http://127.0.0.1:8080), RUNR_AGENT_KEY (default
 * research-bot.key.json), and the topics as arguments.
 */
// In your own project: import { … } from '@4runr/gateway'
import {
  GatewayClient,
  type GatewayError,
  PolicyError,
  QuotaError,
  RateLimitError,
} from '../packages/sdk/src/index.ts'

const baseUrl = process.env['RUNR_URL'] ?? 'http://127.0.0.1:8080'
const topics = process.argv.length > 2 ? process.argv.slice(2) : ['agent security', 'api gateways', 'dpop']

const client = new GatewayClient({
  baseUrl,
  keyFile: process.env['RUNR_AGENT_KEY'] ?? 'research-bot.key.json',
  scope: 'serpapi:search http_fetch:get',
  intent: 'research',
})

/** Explain a refusal in one line; the request id is what an operator needs to find it. */
const why = (err: GatewayError) => `${err.code}: ${err.message} (request ${err.requestId ?? 'n/a'})`

/**
 * Run `call`; on a rate limit the SDK has already retried what it may, so wait once more if the
 * gateway asks for a short pause. A quota, or a long wait, ends the research: undefined.
 */
async function politely<T>(what: string, call: () => Promise<T>): Promise<T | undefined> {
  try {
    return await call()
  } catch (err) {
    if (err instanceof QuotaError) {
      console.log(`  quota for ${what} is used up; it resets in ${err.retryAfter ?? '?'} s. Stopping here.`)
      return undefined
    }
    if (err instanceof RateLimitError && err.retryAfter !== undefined && err.retryAfter <= 10) {
      console.log(`  rate limited on ${what}; waiting ${err.retryAfter} s`)
      await new Promise((done) => setTimeout(done, err.retryAfter! * 1000))
      return politely(what, call)
    }
    if (err instanceof RateLimitError) {
      console.log(`  rate limited on ${what} for ${err.retryAfter ?? '?'} s. Stopping here.`)
      return undefined
    }
    throw err
  }
}

/** Read `url`; if a policy refuses it, read `fallback` instead. */
async function read(url: string, fallback: string): Promise<string> {
  try {
    const page = await client.httpFetch.get(url)
    return `${page.data.status} ${page.data.url}`
  } catch (err) {
    if (!(err instanceof PolicyError)) throw err
    console.log(`  policy denied reading ${url}: ${why(err)}`)
    const page = await client.httpFetch.get(fallback)
    return `${page.data.status} ${page.data.url} (fallback)`
  }
}

for (const topic of topics) {
  console.log(`researching "${topic}"`)
  const found = await politely('search', () => client.serpapi.search({ q: topic, num: 3 }))
  if (found === undefined) break
  const results = found.data.organic_results ?? []
  for (const result of results) console.log(`  result: ${result.title} <${result.link}>`)
  const first = results[0]
  if (first === undefined) continue
  // The demo policy lets http_fetch reach the gateway's own demo channel but not example.com.
  const fallback = `${baseUrl}/demo/notes/${encodeURIComponent(topic)}`
  console.log(`  page: ${await read(first.link, fallback)}`)
}
console.log('done')

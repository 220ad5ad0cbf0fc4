import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { request } from 'undici'
import type { FakeServer } from './fake-server.ts'
import { startFakeSerpApi } from './serpapi.ts'

const apiKey = 'serp-test-key-0123456789'

interface Search {
  search_metadata: Record<string, unknown> & { id: string; json_endpoint: string }
  search_parameters: Record<string, unknown>
  search_information: { total_results: number; query_displayed: string }
  organic_results: Array<{
    position: number
    title: string
    link: string
    displayed_link: string
    snippet: string
  }>
}

describe('the fake SerpAPI', () => {
  let fake: FakeServer
  const search = async (params: Record<string, string>) => {
    const res = await request(`${fake.url}/search.json?${new URLSearchParams(params)}`)
    return { status: res.statusCode, headers: res.headers, body: (await res.body.json()) as Search }
  }

  before(async () => {
    fake = await startFakeSerpApi({ apiKey })
  })
  after(() => fake.close())

  it('answers a search in the documented shape, ten organic results by default', async () => {
    const { status, headers, body } = await search({ q: 'coffee beans', api_key: apiKey, engine: 'google' })
    assert.equal(status, 200)
    assert.match(String(headers['content-type']), /^application\/json/)
    assert.equal(body.search_metadata.status, 'Success')
    for (const field of ['id', 'created_at', 'processed_at', 'total_time_taken', 'json_endpoint']) {
      assert.ok(field in body.search_metadata, field)
    }
    assert.deepEqual(
      { engine: body.search_parameters.engine, q: body.search_parameters.q },
      { engine: 'google', q: 'coffee beans' },
    )
    assert.equal(body.search_information.query_displayed, 'coffee beans')
    assert.ok(Number.isInteger(body.search_information.total_results))
    assert.equal(body.organic_results.length, 10)
    body.organic_results.forEach((result, i) => {
      assert.equal(result.position, i + 1)
      for (const field of ['title', 'link', 'displayed_link', 'snippet'] as const) {
        assert.equal(typeof result[field], 'string', field)
      }
      assert.ok(result.link.startsWith('https://'))
    })
  })

  it('answers the same search the same way, and a different one differently', async () => {
    const a = await search({ q: 'llamas', num: '5', api_key: apiKey })
    const b = await search({ q: 'llamas', num: '5', api_key: apiKey })
    const c = await search({ q: 'alpacas', num: '5', api_key: apiKey })
    assert.deepEqual(a.body, b.body)
    assert.notEqual(a.body.search_metadata.id, c.body.search_metadata.id)
    assert.notDeepEqual(a.body.organic_results, c.body.organic_results)
  })

  it('returns num results, capped at 100, and echoes num and location', async () => {
    const three = await search({ q: 'x', num: '3', location: 'Austin, Texas', api_key: apiKey })
    assert.equal(three.body.organic_results.length, 3)
    assert.equal(three.body.search_parameters.num, '3')
    assert.equal(three.body.search_parameters.location_requested, 'Austin, Texas')
    const many = await search({ q: 'x', num: '500', api_key: apiKey })
    assert.equal(many.body.organic_results.length, 100)
  })

  it('puts an e-mail address, a phone number and a card number in snippets, for redaction filters', async () => {
    const { body } = await search({ q: 'support', api_key: apiKey })
    const snippets = body.organic_results.map((r) => r.snippet).join('\n')
    assert.match(snippets, /contact@example\.com/)
    assert.match(snippets, /\+1 \(555\) 010-0199/)
    assert.match(snippets, /4111 1111 1111 1111/)
  })

  it('serves a past search again at its json_endpoint', async () => {
    const { body } = await search({ q: 'archived', api_key: apiKey })
    assert.ok(body.search_metadata.json_endpoint.startsWith(fake.url))
    const again = await request(`${body.search_metadata.json_endpoint}?api_key=${apiKey}`)
    assert.equal(again.statusCode, 200)
    assert.deepEqual(await again.body.json(), body)
    const unknown = await request(`${fake.url}/searches/${'0'.repeat(24)}.json?api_key=${apiKey}`)
    assert.equal(unknown.statusCode, 404)
    await unknown.body.dump()
  })

  it('refuses a missing or wrong api_key with 401 and SerpAPI error text', async () => {
    for (const params of [{ q: 'x' }, { q: 'x', api_key: 'wrong' }, { q: 'x', api_key: '' }] as Array<
      Record<string, string>
    >) {
      const { status, body } = await search(params)
      assert.equal(status, 401)
      assert.deepEqual(body, {
        error: 'Invalid API key. Your API key should be here: https://serpapi.com/manage-api-key',
      })
    }
    assert.equal(fake.requests.at(-1)!.authorized, false)
  })

  it('refuses a missing or blank q with 400', async () => {
    for (const params of [{ api_key: apiKey }, { q: '  ', api_key: apiKey }] as Array<
      Record<string, string>
    >) {
      const { status, body } = await search(params)
      assert.equal(status, 400)
      assert.deepEqual(body, { error: 'Missing query `q` parameter.' })
    }
  })

  it('answers 404 for other paths and methods', async () => {
    const other = await request(`${fake.url}/account?api_key=${apiKey}`)
    assert.equal(other.statusCode, 404)
    await other.body.dump()
    const post = await request(`${fake.url}/search.json?q=x&api_key=${apiKey}`, { method: 'POST' })
    assert.equal(post.statusCode, 404)
    await post.body.dump()
  })

  it('never records the api_key', async () => {
    await search({ q: 'secret check', api_key: apiKey })
    const seen = fake.requests.at(-1)!
    assert.equal(seen.authorized, true)
    assert.deepEqual(seen.query, { q: 'secret check' })
    assert.ok(!JSON.stringify(fake.requests).includes(apiKey))
  })

  it('answers an injected status in its own error shape', async () => {
    fake.faults.add(
      { kind: 'status', status: 429, headers: { 'retry-after': '1' } },
      { path: '/search.json' },
    )
    const { status, headers, body } = await search({ q: 'x', api_key: apiKey })
    assert.equal(status, 429)
    assert.equal(headers['retry-after'], '1')
    assert.deepEqual(body, { error: 'Too Many Requests' })
  })
})

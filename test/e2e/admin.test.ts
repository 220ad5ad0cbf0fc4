// biome-ignore-all lint/suspicious/noTemplateCurlyInString: `${env:…}` is the config interpolation syntax
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { startTestGateway, type TestGateway, testAdminKey } from '../support/gateway.ts'
import { startUpstream, type TestUpstream } from '../support/upstream.ts'

type ErrorBody = {
  error: { code: string; message: string; status: number; requestId: string; details?: unknown }
}

const configuredKey = 'configured-admin-key-0123456789'
// A usable master key (32 bytes in base64), recognisable when searched for.
const masterKeyCanary = Buffer.from('canary-master-key-5f1e2d-0123456').toString('base64')
const redisPasswordCanary = 'canarypw'
const natsPasswordCanary = 'canary-nats-pass'
const queryTokenCanary = 'canary-query-token'
const literalApiKeyCanary = 'canary-literal-api-key'
const bodyLimitBytes = 4096

/** The value of one Prometheus sample, or undefined when the series is absent. */
function sample(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1))
  }
  return undefined
}

async function expectError(res: Response, status: number, code: string): Promise<ErrorBody> {
  assert.equal(res.status, status)
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/)
  const body = (await res.json()) as ErrorBody
  assert.equal(body.error.code, code)
  assert.equal(body.error.status, status)
  assert.equal(typeof body.error.message, 'string')
  assert.equal(typeof body.error.requestId, 'string')
  assert.ok(body.error.requestId.length > 0)
  return body
}

describe('the admin listener', () => {
  let upstream: TestUpstream
  let gw: TestGateway

  before(async () => {
    upstream = await startUpstream()
    gw = await startTestGateway(
      {
        gateway: { admin: { keys: [configuredKey] }, bodyLimitBytes },
        secrets: { masterKey: '${env:RUNR_TEST_MASTER_KEY}' },
        // The local Redis has no password, and then accepts any password for the user `default`.
        redis: {
          url: `redis://default:${redisPasswordCanary}@127.0.0.1:6379`,
          prefix: `runr_test_${process.pid}_admin:`,
        },
        systems: {
          echo: { kind: 'http', url: upstream.url },
          tokened: { kind: 'http', url: `${upstream.url}/base?token=\${env:RUNR_TEST_QUERY_TOKEN}` },
          keyed: { kind: 'http', url: `${upstream.url}/v2?api_key=${literalApiKeyCanary}&region=eu` },
          events: { kind: 'nats', url: `nats://natsuser:${natsPasswordCanary}@127.0.0.1:4222` },
        },
        channels: [{ name: 'echo', prefix: '/echo', system: 'echo', rules: [{ path: '*', public: true }] }],
      },
      { env: { RUNR_TEST_MASTER_KEY: masterKeyCanary, RUNR_TEST_QUERY_TOKEN: queryTokenCanary } },
    )
  })
  after(async () => {
    await gw.stop()
    await upstream.close()
  })

  const protectedRoutes: Array<[method: string, path: string]> = [
    ['GET', '/metrics'],
    ['GET', '/v1/config'],
    ['POST', '/v1/config/reload'],
    ['GET', '/v1/no-such-route'],
  ]

  it('refuses every route but /health and /ready without a valid Bearer admin key', async () => {
    const refusals: Record<string, string | undefined> = {
      'no key': undefined,
      'a wrong key': 'Bearer wrong-admin-key-0123456789',
      'an empty key': 'Bearer ',
      'a Basic scheme': `Basic ${Buffer.from(`admin:${testAdminKey}`).toString('base64')}`,
      'another scheme': `Token ${testAdminKey}`,
      'the key without a scheme': testAdminKey,
    }
    const reloadsBefore = await (await gw.admin('/metrics')).text()
    for (const [method, path] of protectedRoutes) {
      for (const [why, authorization] of Object.entries(refusals)) {
        const headers: Record<string, string> = authorization === undefined ? {} : { authorization }
        const res = await fetch(`${gw.adminUrl}${path}`, { method, headers })
        const body = await expectError(res, 401, 'unauthenticated')
        assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer\b/, `${method} ${path} with ${why}`)
        assert.equal(body.error.requestId, res.headers.get('x-request-id'))
      }
    }
    // A refused reload did not reload: nothing was counted.
    const reloadsAfter = await (await gw.admin('/metrics')).text()
    for (const result of ['success', 'failure']) {
      const series = `runr_config_reloads_total{result="${result}"}`
      assert.equal(sample(reloadsAfter, series), sample(reloadsBefore, series))
    }
  })

  it('accepts the configured key and RUNR_ADMIN_KEY, with the scheme in any case', async () => {
    for (const authorization of [
      `Bearer ${configuredKey}`,
      `Bearer ${testAdminKey}`,
      `bearer ${configuredKey}`,
    ]) {
      const res = await fetch(`${gw.adminUrl}/v1/config`, { headers: { authorization } })
      assert.equal(res.status, 200, authorization.slice(0, 8))
      await res.arrayBuffer()
    }
  })

  it('serves /health and /ready without a key', async () => {
    const health = await fetch(`${gw.adminUrl}/health`)
    assert.equal(health.status, 200)
    assert.deepEqual(await health.json(), { status: 'ok' })
    const ready = await fetch(`${gw.adminUrl}/ready`)
    // Ready or not (the redis URL points at the local service), never an authentication refusal.
    assert.ok(ready.status === 200 || ready.status === 503, String(ready.status))
    await ready.arrayBuffer()
  })

  it('serves Prometheus metrics with the gateway series and default process metrics', async () => {
    const res = await gw.admin('/metrics')
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain/)
    const text = await res.text()
    for (const name of [
      'runr_requests_total',
      'runr_request_duration_seconds',
      'runr_upstream_duration_seconds',
      'runr_config_reloads_total',
      'runr_process_cpu_user_seconds_total',
      'runr_nodejs_eventloop_lag_seconds',
    ]) {
      assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'), name)
    }
  })

  it('counts requests to a channel by route, method and status class', async () => {
    const n = 7
    const series = 'runr_requests_total{route="echo",method="GET",status="2xx"}'
    assert.equal(sample(await (await gw.admin('/metrics')).text(), series), undefined, 'no request yet')
    for (let i = 0; i < n; i++) {
      const res = await fetch(`${gw.publicUrl}/echo/items/${i}`)
      assert.equal(res.status, 200)
      await res.arrayBuffer()
    }
    // The counter is written when the response finishes, which can trail the client by a tick.
    let seen: number | undefined
    const deadline = Date.now() + 2000
    do {
      seen = sample(await (await gw.admin('/metrics')).text(), series)
      if (seen === n) break
      await new Promise((r) => setTimeout(r, 25))
    } while (Date.now() < deadline)
    assert.equal(seen, n)
    const text = await (await gw.admin('/metrics')).text()
    assert.ok((sample(text, 'runr_upstream_duration_seconds_count{system="echo"}') ?? 0) >= n)
    assert.ok((sample(text, 'runr_request_duration_seconds_count{route="echo",method="GET"}') ?? 0) >= n)
  })

  it('shows the running config with every secret redacted', async () => {
    const res = await gw.admin('/v1/config')
    assert.equal(res.status, 200)
    const text = await res.text()
    for (const canary of [
      configuredKey,
      masterKeyCanary,
      redisPasswordCanary,
      natsPasswordCanary,
      queryTokenCanary,
      literalApiKeyCanary,
    ])
      assert.ok(!text.includes(canary), `the body does not contain ${canary.slice(0, 12)}…`)
    const body = JSON.parse(text) as {
      version: string
      file: string
      config: {
        gateway: { admin: { keys: string[] }; bodyLimitBytes: number }
        secrets: { masterKey: string }
        redis: { url: string }
        systems: Record<string, { kind: string; url: string }>
        channels: Array<{ name: string; system: string }>
      }
    }
    assert.equal(body.version, gw.config().version)
    assert.equal(body.file, gw.configFile)
    // What is not secret is shown as written.
    assert.equal(body.config.gateway.bodyLimitBytes, bodyLimitBytes)
    assert.equal(body.config.systems['echo']?.url, upstream.url)
    assert.deepEqual(body.config.channels[0], {
      name: 'echo',
      prefix: '/echo',
      system: 'echo',
      rules: [{ path: '*', public: true }],
    })
    // Secrets are still there, just not their values.
    assert.equal(body.config.gateway.admin.keys.length, 1)
    assert.match(body.config.secrets.masterKey, /redacted/)
    assert.match(body.config.redis.url, /^redis:\/\/.*127\.0\.0\.1:6379/)
    // A credential in a query string goes; the rest of the URL stays readable.
    assert.match(
      body.config.systems['keyed']?.url ?? '',
      /^http:\/\/127\.0\.0\.1:\d+\/v2\?api_key=.+&region=eu$/,
    )
    // Nothing secret reached the logs either.
    const logs = gw.rawLogs()
    for (const canary of [
      configuredKey,
      testAdminKey,
      masterKeyCanary,
      redisPasswordCanary,
      natsPasswordCanary,
      queryTokenCanary,
      literalApiKeyCanary,
    ])
      assert.ok(!logs.includes(canary), `the logs do not contain ${canary.slice(0, 12)}…`)
  })

  it('answers an unknown admin route with 404 not_found', async () => {
    for (const [method, path] of [
      ['GET', '/v1/no-such-route'],
      ['DELETE', '/v1/config'],
      ['GET', '/v1/config/reload'],
      ['GET', '/'],
    ] as const) {
      await expectError(await gw.admin(path, { method }), 404, 'not_found')
    }
  })

  it('reloads on a POST with no body, an empty JSON object or an ignored text body', async () => {
    for (const init of [
      { method: 'POST' },
      { method: 'POST', headers: { 'content-type': 'application/json' } },
      { method: 'POST', headers: { 'content-type': 'application/json; charset=utf-8' }, body: '' },
      { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' },
      { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'please' },
    ]) {
      const res = await gw.admin('/v1/config/reload', init)
      assert.equal(res.status, 200)
      assert.deepEqual(await res.json(), { reloaded: false, version: gw.config().version })
    }
  })

  it('refuses a reload body that is not JSON or of an unsupported type with 400 and keeps serving', async () => {
    const cases: Array<{ type: string; body: string }> = [
      { type: 'application/json', body: '{"reload": tru' },
      { type: 'application/json', body: '\u0000\u0001' },
      { type: 'application/json', body: '{"__proto__": {"x": 1}}' },
      { type: 'application/xml', body: '<reload/>' },
      { type: 'multipart/form-data; boundary=x', body: '--x--' },
    ]
    for (const { type, body } of cases) {
      const res = await gw.admin('/v1/config/reload', {
        method: 'POST',
        headers: { 'content-type': type },
        body,
      })
      await expectError(res, 400, 'bad_request')
    }
    const health = await fetch(`${gw.adminUrl}/health`)
    assert.equal(health.status, 200)
    await health.arrayBuffer()
    const proxied = await fetch(`${gw.publicUrl}/echo/still-up`)
    assert.equal(proxied.status, 200)
    await proxied.arrayBuffer()
  })

  it('refuses a body over gateway.bodyLimitBytes with 413, with or without a content-length', async () => {
    const big = JSON.stringify({ pad: 'x'.repeat(bodyLimitBytes * 2) })
    const sized = await gw.admin('/v1/config/reload', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: big,
    })
    await expectError(sized, 413, 'payload_too_large')

    const chunks = [big.slice(0, bodyLimitBytes), big.slice(bodyLimitBytes)]
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        const next = chunks.shift()
        if (next === undefined) controller.close()
        else controller.enqueue(new TextEncoder().encode(next))
      },
    })
    const chunked = await gw.admin('/v1/config/reload', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: stream,
      duplex: 'half',
    } as RequestInit)
    await expectError(chunked, 413, 'payload_too_large')
  })

  it('echoes the request and correlation ids on admin answers, errors included', async () => {
    const cases: Array<{ path: string; key: boolean; status: number }> = [
      { path: '/v1/config', key: true, status: 200 },
      { path: '/metrics', key: true, status: 200 },
      { path: '/health', key: false, status: 200 },
      { path: '/v1/nowhere', key: true, status: 404 },
      { path: '/v1/config', key: false, status: 401 },
    ]
    for (const [i, { path, key, status }] of cases.entries()) {
      const headers: Record<string, string> = {
        'x-request-id': `admin-req-${i}`,
        'x-correlation-id': `admin-corr-${i}`,
      }
      if (key) headers['authorization'] = `Bearer ${testAdminKey}`
      const res = await fetch(`${gw.adminUrl}${path}`, { headers })
      assert.equal(res.status, status, path)
      assert.equal(res.headers.get('x-request-id'), `admin-req-${i}`, path)
      assert.equal(res.headers.get('x-correlation-id'), `admin-corr-${i}`, path)
      if (status >= 400) assert.equal(((await res.json()) as ErrorBody).error.requestId, `admin-req-${i}`)
      else await res.arrayBuffer()
    }
    // Without ids the gateway makes them, and the correlation id defaults to the request id.
    const res = await gw.admin('/v1/config')
    await res.arrayBuffer()
    const requestId = res.headers.get('x-request-id')
    assert.ok(requestId !== null && requestId.length > 0)
    assert.equal(res.headers.get('x-correlation-id'), requestId)
  })
})

describe('admin keys across a reload', () => {
  let gw: TestGateway
  const oldKey = 'rotated-out-admin-key-0123456789'
  const newKey = 'rotated-in-admin-key-0123456789'

  before(async () => {
    gw = await startTestGateway({ gateway: { admin: { keys: [oldKey] } } })
  })
  after(() => gw.stop())

  const statusWith = async (key: string): Promise<number> => {
    const res = await fetch(`${gw.adminUrl}/v1/config`, { headers: { authorization: `Bearer ${key}` } })
    await res.arrayBuffer()
    return res.status
  }

  it('takes a rotated gateway.admin.keys at once: the new key works and the removed one is refused', async () => {
    assert.equal(await statusWith(oldKey), 200)
    assert.equal(await statusWith(newKey), 401)
    await gw.writeConfig({ gateway: { admin: { keys: [newKey] } } })
    const res = await gw.admin('/v1/config/reload', { method: 'POST' })
    assert.equal(res.status, 200)
    await res.arrayBuffer()
    assert.equal(await statusWith(newKey), 200)
    assert.equal(await statusWith(oldKey), 401)
    // RUNR_ADMIN_KEY is always a key, whatever the file says.
    assert.equal(await statusWith(testAdminKey), 200)
  })
})

describe('admin keys across a reload without RUNR_ADMIN_KEY', () => {
  let gw: TestGateway
  const onlyKey = 'the-only-admin-key-0123456789'

  before(async () => {
    gw = await startTestGateway({ gateway: { admin: { keys: [onlyKey] } } }, { env: { RUNR_ADMIN_KEY: '' } })
  })
  after(() => gw.stop())

  it('keeps the configured keys when a reload would leave no admin key at all', async () => {
    const withKey = (path: string, init: RequestInit = {}) =>
      fetch(`${gw.adminUrl}${path}`, { ...init, headers: { authorization: `Bearer ${onlyKey}` } })
    await gw.writeConfig({ gateway: { admin: { keys: [] } } })
    const res = await withKey('/v1/config/reload', { method: 'POST' })
    assert.equal(res.status, 200)
    await res.arrayBuffer()
    const shown = await withKey('/v1/config')
    assert.equal(shown.status, 200)
    assert.deepEqual(
      ((await shown.json()) as { config: { gateway: { admin: { keys: string[] } } } }).config.gateway.admin
        .keys,
      [],
    )
  })
})

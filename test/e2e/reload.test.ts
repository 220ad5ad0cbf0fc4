import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdir, mkdtemp, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import { stringify } from 'yaml'
import { startGateway } from '../../packages/server/src/main.ts'
import { startTestGateway, type TestGateway, testAdminKey } from '../support/gateway.ts'
import { startSlowUpstream, startUpstream, type TestUpstream } from '../support/upstream.ts'

type ReloadProblem = { path: string; line?: number; message: string }
type ErrorBody = {
  error: {
    code: string
    status: number
    requestId: string
    message: string
    details?: { runningVersion?: string; problems?: ReloadProblem[] }
  }
}

const devNull = () => new Writable({ write: (_c, _e, done) => done() })
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** The version the gateway gives a config file: a short hash of its text. */
async function versionOf(file: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(file, 'utf8'))
    .digest('hex')
    .slice(0, 12)
}

/** The value of one Prometheus sample (0 when the series is absent). */
async function sample(gw: TestGateway, series: string): Promise<number> {
  const text = await (await gw.admin('/metrics')).text()
  for (const line of text.split('\n'))
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1))
  return 0
}

/** GET a public path until it answers `status`, for up to `ms`; returns the last status seen. */
async function pollStatus(url: string, status: number, ms: number): Promise<number> {
  const deadline = Date.now() + ms
  let seen = 0
  while (Date.now() < deadline) {
    const res = await fetch(url)
    await res.arrayBuffer()
    seen = res.status
    if (seen === status) return seen
    await sleep(50)
  }
  return seen
}

/**
 * Make the config path a symlink into a subdirectory, the way Kubernetes mounts a ConfigMap: the
 * watcher on the file's own directory sees nothing when the target is replaced, so only polling
 * can find the change. Returns a function that atomically replaces the target (temp file + rename).
 */
async function symlinkConfig(gw: TestGateway): Promise<(text: string) => Promise<void>> {
  const live = join(gw.dir, 'live')
  await mkdir(live)
  await writeFile(join(live, '4runr.yaml'), await readFile(gw.configFile, 'utf8'))
  await symlink(join('live', '4runr.yaml'), join(gw.dir, 'link.tmp'))
  await rename(join(gw.dir, 'link.tmp'), gw.configFile)
  await sleep(300)
  return async (text) => {
    await writeFile(join(live, '.4runr.yaml.tmp'), text)
    await rename(join(live, '.4runr.yaml.tmp'), join(live, '4runr.yaml'))
  }
}

/** The YAML of a config polled every 200 ms, for a file written by hand rather than writeConfig. */
function polledConfig(gw: TestGateway, upstream: TestUpstream, channels: object[]): string {
  return stringify({
    gateway: {
      refreshMs: 200,
      listen: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0 },
    },
    store: { kind: 'sqlite', path: join(gw.dir, '4runr.db') },
    systems: { backend: { kind: 'http', url: upstream.url } },
    channels,
  })
}

function channel(name: string, system = 'backend') {
  return { name, prefix: `/${name}`, system, rules: [{ path: '*', public: true }] }
}

describe('hot reload', () => {
  let upstream: TestUpstream
  let gw: TestGateway
  const valid = () => ({
    systems: { backend: { kind: 'http', url: upstream.url } },
    channels: [channel('one')],
  })

  before(async () => {
    upstream = await startUpstream()
    gw = await startTestGateway(valid())
  })
  after(async () => {
    await gw.stop()
    await upstream.close()
  })

  it('picks up a changed file without being asked', async () => {
    assert.equal(await pollStatus(`${gw.publicUrl}/two/x`, 404, 100), 404)
    await gw.writeConfig({ ...valid(), channels: [channel('one'), channel('two')] })
    assert.equal(await pollStatus(`${gw.publicUrl}/two/x`, 200, 3000), 200)
    assert.equal(gw.config().version, await versionOf(gw.configFile))
    assert.ok(gw.logs.some((l) => l['msg'] === 'config reloaded' && l['version'] === gw.config().version))
  })

  it('reloads on POST /v1/config/reload and answers {reloaded, version}', async () => {
    const successes = await sample(gw, 'runr_config_reloads_total{result="success"}')
    await gw.writeConfig({ ...valid(), channels: [channel('one'), channel('three')] })
    const expected = await versionOf(gw.configFile)
    const res = await gw.admin('/v1/config/reload', { method: 'POST' })
    assert.equal(res.status, 200)
    const body = (await res.json()) as { reloaded: boolean; version: string }
    // The watcher may have swapped the version a moment before this call; either way it is running.
    assert.equal(typeof body.reloaded, 'boolean')
    assert.equal(body.version, expected)
    assert.equal((await fetch(`${gw.publicUrl}/three/x`)).status, 200)
    assert.equal(await sample(gw, 'runr_config_reloads_total{result="success"}'), successes + 1)

    const again = await gw.admin('/v1/config/reload', { method: 'POST' })
    assert.deepEqual(await again.json(), { reloaded: false, version: expected })
    const shown = (await (await gw.admin('/v1/config')).json()) as { version: string }
    assert.equal(shown.version, expected)
    // Re-reading an unchanged file is not a reload.
    assert.equal(await sample(gw, 'runr_config_reloads_total{result="success"}'), successes + 1)
  })

  /** Write `bad`, ask for a reload, and check it is refused for `paths` while the old routes serve. */
  async function expectRefused(write: () => Promise<void>, paths: RegExp[]): Promise<void> {
    const running = gw.config().version
    const failures = await sample(gw, 'runr_config_reloads_total{result="failure"}')
    const refusedLines = gw.logs.filter((l) => l['msg'] === 'config reload refused').length
    await write()
    const res = await gw.admin('/v1/config/reload', { method: 'POST' })
    assert.equal(res.status, 422)
    const body = (await res.json()) as ErrorBody
    assert.equal(body.error.code, 'unprocessable')
    assert.equal(body.error.status, 422)
    assert.equal(body.error.details?.runningVersion, running)
    const problems = body.error.details?.problems ?? []
    for (const path of paths) {
      assert.ok(
        problems.some((p) => path.test(p.path)),
        `a problem at ${path} in ${JSON.stringify(problems)}`,
      )
    }
    assert.equal(gw.config().version, running)
    const old = await fetch(`${gw.publicUrl}/one/still-here`)
    assert.equal(old.status, 200)
    await old.arrayBuffer()
    assert.ok((await sample(gw, 'runr_config_reloads_total{result="failure"}')) > failures)
    const lines = gw.logs.filter((l) => l['msg'] === 'config reload refused')
    assert.ok(lines.length > refusedLines)
    assert.equal(lines.at(-1)?.['runningVersion'], running)
  }

  it('refuses a version with an unknown key, and the running one stays', async () => {
    await expectRefused(
      () => gw.writeConfig({ ...valid(), gateway: { bogusKey: true } }),
      [/^gateway\.bogusKey$/],
    )
  })

  it('refuses a version with a wrong type, and the running one stays', async () => {
    await expectRefused(
      () =>
        gw.writeConfig({
          ...valid(),
          gateway: { refreshMs: 'soon' },
          channels: [{ ...channel('one'), rules: [{ path: 5 }] }],
        }),
      [/^gateway\.refreshMs$/, /^channels\[0\]\.rules\[0\]\.path$/],
    )
  })

  it('refuses a version that is not valid YAML, and the running one stays', async () => {
    await expectRefused(
      () => gw.writeConfig('systems:\n  backend: {kind: http, url: [\nchannels: ]\n'),
      [/^\(yaml\)$/],
    )
  })

  it('refuses a version whose channel names an unknown system, and the running one stays', async () => {
    await expectRefused(
      () => gw.writeConfig({ ...valid(), channels: [channel('one'), channel('lost', 'nowhere')] }),
      [/^channels\[1\]\.system$/],
    )
  })

  it('refuses an empty file, which is what a reader sees between a truncate and the write', async () => {
    await expectRefused(() => gw.writeConfig(''), [/^\(file\)$/])
    await expectRefused(() => gw.writeConfig('  \n\n'), [/^\(file\)$/])
  })

  it('refuses while the file is gone, and serves the old version until it is back', async () => {
    await gw.writeConfig(valid())
    await gw.reload()
    const running = gw.config().version
    await expectRefused(() => rm(gw.configFile), [/^\(file\)$/])
    // The watcher and the timer keep running over a missing file.
    await sleep(200)
    assert.equal(gw.config().version, running)
    await gw.writeConfig({ ...valid(), channels: [channel('one'), channel('back')] })
    assert.equal(await pollStatus(`${gw.publicUrl}/back/x`, 200, 3000), 200)
  })

  it('refuses while the path is a directory, and serves the old version', async () => {
    await rm(gw.configFile)
    await mkdir(gw.configFile)
    try {
      await expectRefused(async () => {}, [/^\(file\)$/])
    } finally {
      await rm(gw.configFile, { recursive: true })
      await gw.writeConfig(valid())
    }
    assert.equal(await pollStatus(`${gw.publicUrl}/back/x`, 404, 3000), 404)
  })
})

describe('periodic re-read (gateway.refreshMs)', () => {
  let upstream: TestUpstream
  let gw: TestGateway
  let configFor: (channels: object[]) => string

  before(async () => {
    upstream = await startUpstream()
    gw = await startTestGateway({
      gateway: { refreshMs: 200 },
      systems: { backend: { kind: 'http', url: upstream.url } },
      channels: [channel('one')],
    })
    configFor = (channels) => polledConfig(gw, upstream, channels)
  })
  after(async () => {
    await gw.stop()
    await upstream.close()
  })

  it('picks up a change that the file watcher cannot see', async () => {
    const replaceTarget = await symlinkConfig(gw)
    await replaceTarget(configFor([channel('one'), channel('polled')]))
    assert.equal(await pollStatus(`${gw.publicUrl}/polled/x`, 200, 3000), 200)
    assert.equal(gw.config().version, await versionOf(gw.configFile))
  })
})

describe('a reload during a request', () => {
  let slow: TestUpstream
  let fast: TestUpstream
  let gw: TestGateway
  let slowArrived: Promise<void>

  before(async () => {
    ;({ upstream: slow, arrived: slowArrived } = await startSlowUpstream(500, 'answered by A'))
    fast = await startUpstream((_req, res) => res.end('answered by B'))
    gw = await startTestGateway({
      systems: { backend: { kind: 'http', url: slow.url } },
      channels: [channel('swap')],
    })
  })
  after(async () => {
    await gw.stop()
    await slow.close()
    await fast.close()
  })

  it('lets the request finish on the version it started with, and sends the next to the new one', async () => {
    let firstDone = false
    const first = fetch(`${gw.publicUrl}/swap/work`).then(async (res) => {
      firstDone = true
      return { status: res.status, text: await res.text() }
    })
    await slowArrived
    const started = Date.now()
    await gw.writeConfig({
      systems: { backend: { kind: 'http', url: fast.url } },
      channels: [channel('swap')],
    })
    const res = await gw.admin('/v1/config/reload', { method: 'POST' })
    assert.equal(res.status, 200)
    const body = (await res.json()) as { reloaded: boolean; version: string }
    assert.equal(body.version, await versionOf(gw.configFile))
    // The swap does not wait for in-flight requests.
    assert.ok(Date.now() - started < 400, 'the reload finished while A was still working')
    assert.equal(firstDone, false)

    assert.deepEqual(await first, { status: 200, text: 'answered by A' })
    const next = await fetch(`${gw.publicUrl}/swap/work`)
    assert.equal(next.status, 200)
    assert.equal(await next.text(), 'answered by B')
    assert.equal(slow.requests.length, 1)
    assert.equal(fast.requests.length, 1)
  })
})

describe('reload bookkeeping', () => {
  let upstream: TestUpstream
  const gateways: TestGateway[] = []
  before(async () => {
    upstream = await startUpstream()
  })
  after(async () => {
    for (const gw of gateways) await gw.stop()
    await upstream.close()
  })

  it('counts and logs a broken file once, however often it is re-read', async () => {
    const gw = await startTestGateway({
      systems: { backend: { kind: 'http', url: upstream.url } },
      channels: [channel('one')],
    })
    gateways.push(gw)
    const failures = await sample(gw, 'runr_config_reloads_total{result="failure"}')
    await gw.writeConfig('channels: [ { name: one, system: nowhere } ]\n')
    for (let i = 0; i < 3; i++) assert.equal((await gw.reload()).ok, false)
    assert.equal(await sample(gw, 'runr_config_reloads_total{result="failure"}'), failures + 1)
    assert.equal(gw.logs.filter((l) => l['msg'] === 'config reload refused').length, 1)
    await gw.writeConfig('channels: [ { name: one, system: elsewhere } ]\n')
    assert.equal((await gw.reload()).ok, false)
    assert.equal(
      await sample(gw, 'runr_config_reloads_total{result="failure"}'),
      failures + 2,
      'a new problem counts',
    )
  })

  it('notices a changed ${file:…} value even when the YAML text is unchanged', async () => {
    const gw = await startTestGateway({
      systems: { backend: { kind: 'http', url: upstream.url } },
      channels: [{ ...channel('one'), requestHeaders: { set: { 'X-Token': '${file:token.txt}' } } }],
    }).catch(() => undefined)
    // The first start reads token.txt relative to the config file, so it has to exist first.
    assert.equal(gw, undefined, 'a missing ${file:} is refused at start')
    const dir = await mkdtemp(join(tmpdir(), 'runr-reload-'))
    await writeFile(join(dir, 'token.txt'), 'first\n')
    const file = join(dir, '4runr.yaml')
    await writeFile(
      file,
      stringify({
        gateway: {
          listen: { host: '127.0.0.1', port: 0 },
          admin: { host: '127.0.0.1', port: 0 },
          refreshMs: 0,
        },
        store: { kind: 'sqlite', path: join(dir, '4runr.db') },
        systems: { backend: { kind: 'http', url: upstream.url } },
        channels: [
          { ...channel('one'), requestHeaders: { set: { 'X-Token': `\${file:${join(dir, 'token.txt')}}` } } },
        ],
      }),
    )
    const running = await startGateway({
      configFile: file,
      env: { RUNR_ADMIN_KEY: testAdminKey },
      logDestination: devNull(),
    })
    try {
      const seen = async () =>
        ((await (await fetch(`${running.publicUrl}/one/x`)).json()) as { headers: Record<string, string> })
          .headers['x-token']
      assert.equal(await seen(), 'first')
      await writeFile(join(dir, 'token.txt'), 'second\n')
      const result = await running.reload()
      assert.ok(result.ok && result.changed)
      assert.equal(await seen(), 'second')
    } finally {
      await running.stop()
    }
  })

  it('applies a changed refreshMs without a restart', async () => {
    const gw = await startTestGateway({
      gateway: { refreshMs: 0 },
      systems: { backend: { kind: 'http', url: upstream.url } },
      channels: [channel('one')],
    })
    gateways.push(gw)
    const configFor = (channels: object[]) => polledConfig(gw, upstream, channels)
    await gw.writeConfig(configFor([channel('one')]))
    assert.ok((await gw.reload()).ok)
    assert.equal(gw.config().gateway.refreshMs, 200)
    // Only the newly armed poll can see a change to a symlinked file's target.
    const replaceTarget = await symlinkConfig(gw)
    await replaceTarget(configFor([channel('one'), channel('polled')]))
    assert.equal(await pollStatus(`${gw.publicUrl}/polled/x`, 200, 3000), 200)
  })
})

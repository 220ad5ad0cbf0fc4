// biome-ignore-all lint/suspicious/noTemplateCurlyInString: `${…}` in these strings is the literal interpolation syntax
import assert from 'node:assert/strict'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { configCheck } from '../cli/config-check.ts'
import {
  ConfigError,
  type ConfigProblem,
  interpolatedPaths,
  loadConfigFile,
  parseConfigText,
} from './load.ts'

/** The problems parseConfigText refuses `text` with; fails if it accepts it. */
function problemsOf(text: string, opts: Parameters<typeof parseConfigText>[1] = {}): ConfigProblem[] {
  try {
    parseConfigText(text, { env: {}, ...opts })
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`)
    return error.problems
  }
  assert.fail('expected the config to be refused')
}

/** `path: message` for each problem, the shape most assertions care about. */
function reasons(text: string, opts: Parameters<typeof parseConfigText>[1] = {}): string[] {
  return problemsOf(text, opts).map((problem) => `${problem.path}: ${problem.message}`)
}

describe('parseConfigText', () => {
  it('accepts an empty document as an empty config', () => {
    assert.deepEqual(parseConfigText('', { env: {} }), {})
    assert.deepEqual(parseConfigText('# only a comment\n', { env: {} }), {})
  })

  it('refuses an unknown key at the root with its path and line', () => {
    const problems = problemsOf('gateway: {}\nbogus: 1\n')
    assert.deepEqual(problems, [{ path: 'bogus', line: 2, column: 1, message: 'unknown key "bogus"' }])
  })

  it('refuses an unknown nested key at the parent path plus the key, pointing at the key', () => {
    const problems = problemsOf('gateway:\n  listen:\n    port: 8080\n    prot: 9\n')
    assert.deepEqual(problems, [
      { path: 'gateway.listen.prot', line: 4, column: 5, message: 'unknown key "prot"' },
    ])
  })

  it('refuses a wrong type with the type it expected', () => {
    assert.deepEqual(reasons('gateway:\n  listen: { port: eighty }\n'), [
      'gateway.listen.port: expected integer',
    ])
    assert.deepEqual(reasons('gateway: 3\n'), ['gateway: expected object'])
  })

  it('refuses a missing required key at the path of the object that lacks it', () => {
    const problems = problemsOf('channels:\n  - system: orders\n')
    assert.deepEqual(problems, [
      { path: 'channels[0]', line: 2, column: 5, message: 'missing required key "name"' },
    ])
  })

  it('refuses a value outside a set of literals with the values allowed', () => {
    assert.deepEqual(reasons('gateway:\n  requestId: { on: sometimes }\n'), [
      'gateway.requestId.on: expected one of: none, always, error',
    ])
  })

  it('refuses a string that does not match its pattern', () => {
    assert.deepEqual(reasons('channels:\n  - { name: orders, system: orders, prefix: orders }\n'), [
      'channels[0].prefix: expected a string matching ^/[^?#]*$',
    ])
  })

  it('refuses a malformed duration with examples of the format', () => {
    assert.deepEqual(reasons('tokens: { ttl: 5 minutes, maxTtl: -1 }\n'), [
      'tokens.ttl: expected a duration such as 500ms, 4s, 15m, 1h, 7d',
      'tokens.maxTtl: expected a duration such as 500ms, 4s, 15m, 1h, 7d',
    ])
  })

  it('explains a system through the branch its kind selects', () => {
    const problems = reasons(
      'systems:\n  orders: { kind: http, url: ftp://orders }\n  events: { kind: nats, url: 4222 }\n',
    )
    assert.equal(problems.length, 2)
    assert.match(problems[0]!, /^systems\.orders\.url: expected a string matching \^https\?:\/\//)
    assert.equal(problems[1], 'systems.events.url: expected string')
  })

  it('refuses an unknown or missing system kind with the kinds it could be', () => {
    assert.deepEqual(reasons('systems:\n  a: { kind: ftp }\n  b: { url: http://b }\n'), [
      'systems.a.kind: expected one of: http, nats, demo',
      'systems.b: missing required key "kind" (one of: http, nats, demo)',
    ])
  })

  it('reports errors in array items with index paths', () => {
    const text = [
      'channels:',
      '  - { name: a, system: a }',
      '  - name: b',
      '    system: b',
      '    rules:',
      '      - path: 3',
      '',
    ].join('\n')
    assert.deepEqual(problemsOf(text), [
      { path: 'channels[1].rules[0].path', line: 6, column: 15, message: 'expected string' },
    ])
  })

  it('merges the branches of a union into one expectation when the value fits none', () => {
    assert.deepEqual(reasons('channels:\n  - { name: a, system: a, rules: [{ path: "*", methods: 3 }] }\n'), [
      'channels[0].rules[0].methods: expected array or object',
    ])
  })

  it('explains the union branch whose type the value has', () => {
    assert.deepEqual(
      reasons('channels:\n  - { name: a, system: a, rules: [{ path: "*", methods: [GET, FETCH] }] }\n'),
      ['channels[0].rules[0].methods[1]: expected one of: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS'],
    )
  })

  it('reports every problem, not only the first eight', () => {
    const keys = Array.from({ length: 12 }, (_, index) => `extra${index}: 1`)
    assert.equal(problemsOf(`${keys.join('\n')}\n`).length, 12)
  })

  it('orders problems by line and lists each as FILE:LINE:COL path: reason in the message', () => {
    try {
      parseConfigText('tokens: { ttl: soon }\ngateway:\n  listen: { port: x }\nzzz: 1\n', {
        file: 'gw.yaml',
        env: {},
      })
      assert.fail('expected the config to be refused')
    } catch (error) {
      assert.ok(error instanceof ConfigError)
      assert.deepEqual(error.message.split('\n'), [
        'gw.yaml:1:16 tokens.ttl: expected a duration such as 500ms, 4s, 15m, 1h, 7d',
        'gw.yaml:3:19 gateway.listen.port: expected integer',
        'gw.yaml:4:1 zzz: unknown key "zzz"',
      ])
    }
  })

  it('refuses a document that is not a mapping at (root)', () => {
    assert.deepEqual(reasons('- a\n- b\n'), ['(root): expected object'])
  })

  it('refuses a YAML syntax error with its line', () => {
    const problems = problemsOf('gateway:\n  listen: [1\n')
    assert.equal(problems.length, 1)
    assert.equal(problems[0]?.path, '(yaml)')
    assert.equal(typeof problems[0]?.line, 'number')
    assert.doesNotMatch(problems[0]?.message ?? '', /\n/)
  })

  it('refuses a duplicated key as a YAML error', () => {
    const problems = problemsOf('gateway: {}\ngateway: {}\n')
    assert.equal(problems[0]?.path, '(yaml)')
    assert.equal(problems[0]?.line, 2)
  })
})

describe('interpolation', () => {
  it('substitutes ${env:NAME} inside a string', () => {
    const config = parseConfigText('gateway: { issuer: "https://${env:HOST}/gw" }\n', {
      env: { HOST: 'gw.example' },
    })
    assert.equal(config.gateway?.issuer, 'https://gw.example/gw')
  })

  it('uses the default of ${env:NAME:-default} when the variable is unset or empty', () => {
    const text = 'gateway: { issuer: "${env:A:-http://a}", listen: { host: "${env:B:-0.0.0.0}" } }\n'
    const config = parseConfigText(text, { env: { B: '' } })
    assert.equal(config.gateway?.issuer, 'http://a')
    assert.equal(config.gateway?.listen?.host, '0.0.0.0')
  })

  it('refuses a missing environment variable at the path that used it', () => {
    const problems = problemsOf('gateway:\n  admin:\n    keys: ["${env:RUNR_ADMIN_KEY}"]\n')
    assert.deepEqual(problems, [
      {
        path: 'gateway.admin.keys[0]',
        line: 3,
        column: 12,
        message: 'environment variable RUNR_ADMIN_KEY is not set',
      },
    ])
  })

  it('reads a lone expression again as a YAML scalar, so numbers and booleans keep their type', () => {
    const text =
      'gateway: { listen: { port: "${env:PORT}" }, trustProxy: "${env:FLAG}", issuer: "${env:ID}" }\n'
    const config = parseConfigText(text, { env: { PORT: '9090', FLAG: 'false', ID: '42x' } })
    assert.equal(config.gateway?.listen?.port, 9090)
    assert.equal(config.gateway?.trustProxy, false)
    assert.equal(config.gateway?.issuer, '42x')
  })

  it('keeps an explicitly tagged lone expression a string', () => {
    const config = parseConfigText('secrets: { masterKey: !!str "${env:KEY}" }\n', { env: { KEY: '12345' } })
    assert.equal(config.secrets?.masterKey, '12345')
  })

  it('keeps a partial expression a string even when the result looks like a number', () => {
    const config = parseConfigText('secrets: { masterKey: "${env:A}${env:B}" }\n', {
      env: { A: '1', B: '2' },
    })
    assert.equal(config.secrets?.masterKey, '12')
  })

  it('writes a literal ${ for $${ and does not interpolate it', () => {
    const config = parseConfigText('gateway: { issuer: "$${env:NOT_READ} costs $5" }\n', { env: {} })
    assert.equal(config.gateway?.issuer, '${env:NOT_READ} costs $5')
    assert.equal(interpolatedPaths(config).size, 0)
  })

  it('cannot inject YAML structure through an interpolated value', () => {
    const env = { EVIL: 'x\n  evil: 1', MAP: '{ evil: 1 }' }
    const text = 'gateway: { issuer: "${env:EVIL}" }\nsecrets: { masterKey: "${env:MAP}" }\n'
    const config = parseConfigText(text, { env })
    assert.equal(config.gateway?.issuer, 'x\n  evil: 1')
    assert.equal(config.secrets?.masterKey, '{ evil: 1 }')
    assert.deepEqual(Object.keys(config.gateway ?? {}), ['issuer'])
  })

  it('refuses an unknown interpolation and an unterminated one', () => {
    assert.match(
      reasons('gateway: { issuer: "${vault:x}" }\n')[0] ?? '',
      /^gateway\.issuer: unknown interpolation/,
    )
    assert.match(reasons('gateway: { issuer: "${env:X" }\n')[0] ?? '', /^gateway\.issuer: unterminated/)
  })

  it('reports only the interpolation problem for a value that failed to interpolate', () => {
    assert.deepEqual(reasons('gateway: { listen: { port: "${env:PORT}" } }\n'), [
      'gateway.listen.port: environment variable PORT is not set',
    ])
  })

  it('records which values were interpolated, including through an alias', () => {
    const text = [
      'secrets: { masterKey: &key "${env:KEY}" }',
      'gateway:',
      '  issuer: http://gw',
      '  admin: { keys: [*key, "prefix-${env:KEY}"] }',
      '',
    ].join('\n')
    const config = parseConfigText(text, { env: { KEY: 'k'.repeat(20) } })
    assert.deepEqual([...interpolatedPaths(config)].sort(), [
      'gateway.admin.keys[0]',
      'gateway.admin.keys[1]',
      'secrets.masterKey',
    ])
    assert.deepEqual(config.gateway?.admin?.keys, ['k'.repeat(20), `prefix-${'k'.repeat(20)}`])
  })
})

describe('file interpolation and loadConfigFile', () => {
  let dir: string

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'runr-config-'))
  })
  after(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('reads ${file:PATH} relative to the config file, without its trailing newline', async () => {
    await mkdir(join(dir, 'secrets'), { recursive: true })
    await writeFile(join(dir, 'secrets', 'master.key'), 'from-a-file\n')
    await writeFile(join(dir, 'gw.yaml'), 'secrets: { masterKey: "${file:secrets/master.key}" }\n')
    const { config } = await loadConfigFile(join(dir, 'gw.yaml'), { env: {} })
    assert.equal(config.secrets?.masterKey, 'from-a-file')
    assert.deepEqual([...interpolatedPaths(config)], ['secrets.masterKey'])
  })

  it('refuses an unreadable ${file:PATH} at the path that used it', async () => {
    // Tests run as root, where chmod 000 does not stop a read; a directory cannot be read either.
    await mkdir(join(dir, 'not-a-file'), { recursive: true })
    await writeFile(join(dir, 'bad-ref.yaml'), 'secrets:\n  masterKey: "${file:not-a-file}"\n')
    await assert.rejects(loadConfigFile(join(dir, 'bad-ref.yaml'), { env: {} }), (error: unknown) => {
      assert.ok(error instanceof ConfigError)
      assert.deepEqual(error.problems, [
        {
          path: 'secrets.masterKey',
          line: 2,
          column: 14,
          message: 'cannot read file "not-a-file": is a directory (EISDIR)',
        },
      ])
      return true
    })
  })

  it('loads a file and returns its text', async () => {
    const text = 'gateway: { listen: { port: 0 } }\n'
    await writeFile(join(dir, 'ok.yaml'), text)
    const loaded = await loadConfigFile(join(dir, 'ok.yaml'), { env: {} })
    assert.equal(loaded.text, text)
    assert.deepEqual(loaded.config, { gateway: { listen: { port: 0 } } })
  })

  it('treats an empty file as an empty config', async () => {
    await writeFile(join(dir, 'empty.yaml'), '')
    assert.deepEqual((await loadConfigFile(join(dir, 'empty.yaml'), { env: {} })).config, {})
  })

  it('refuses a missing file at (file) with the reason', async () => {
    const file = join(dir, 'missing.yaml')
    await assert.rejects(loadConfigFile(file), (error: unknown) => {
      assert.ok(error instanceof ConfigError)
      assert.deepEqual(error.problems, [
        { path: '(file)', message: 'cannot read the file: no such file or directory (ENOENT)' },
      ])
      assert.equal(error.message, `${file} (file): cannot read the file: no such file or directory (ENOENT)`)
      return true
    })
  })

  it('refuses an unreadable path (a directory) at (file)', async () => {
    await assert.rejects(loadConfigFile(dir), (error: unknown) => {
      assert.ok(error instanceof ConfigError)
      assert.deepEqual(error.problems, [
        { path: '(file)', message: 'cannot read the file: is a directory (EISDIR)' },
      ])
      return true
    })
  })

  it('names the file and position of each problem in the message', async () => {
    const file = join(dir, 'typo.yaml')
    await writeFile(file, 'gateway:\n  lisen: {}\n')
    await assert.rejects(loadConfigFile(file, { env: {} }), {
      name: 'ConfigError',
      message: `${file}:2:3 gateway.lisen: unknown key "lisen"`,
    })
  })

  it('config check prints FILE: ok and returns 0 for a valid file', async () => {
    const file = join(dir, 'check-ok.yaml')
    await writeFile(file, 'gateway: { listen: { port: 0 } }\n')
    const logged: string[] = []
    const errors: string[] = []
    const code = await configCheck(file, { log: (s) => logged.push(s), error: (s) => errors.push(s) })
    assert.equal(code, 0)
    assert.deepEqual(logged, [`${file}: ok`])
    assert.deepEqual(errors, [])
  })

  it('config check prints every problem on its own line and returns 1', async () => {
    const file = join(dir, 'check-bad.yaml')
    await writeFile(file, 'gateway:\n  listen: { port: x }\nbogus: 1\n')
    const logged: string[] = []
    const errors: string[] = []
    const code = await configCheck(file, { log: (s) => logged.push(s), error: (s) => errors.push(s) })
    assert.equal(code, 1)
    assert.deepEqual(logged, [])
    assert.deepEqual(errors, [
      `${file}:2:19 gateway.listen.port: expected integer`,
      `${file}:3:1 bogus: unknown key "bogus"`,
    ])
  })

  it('config check names the file in problems found after validation', async () => {
    const file = join(dir, 'check-ref.yaml')
    await writeFile(file, 'channels:\n  - { name: orders, system: nowhere }\n')
    const errors: string[] = []
    assert.equal(await configCheck(file, { log: () => {}, error: (s) => errors.push(s) }), 1)
    assert.ok(errors.length > 0)
    for (const line of errors) assert.ok(line.startsWith(`${file} channels[0]`), line)
  })

  it('validates the DESIGN §17 example with no problems', async () => {
    const file = fileURLToPath(new URL('./fixtures/design-example.yaml', import.meta.url))
    const env = { RUNR_ADMIN_KEY: 'admin-key-0123456789abcdef', RUNR_MASTER_KEY: 'master-key-for-tests' }
    const { config } = await loadConfigFile(file, { env })
    assert.equal(config.gateway?.admin?.keys?.[0], env.RUNR_ADMIN_KEY)
    assert.equal(config.secrets?.masterKey, env.RUNR_MASTER_KEY)
    assert.deepEqual([...interpolatedPaths(config)].sort(), ['gateway.admin.keys[0]', 'secrets.masterKey'])
  })
})

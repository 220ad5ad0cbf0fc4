import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { compileConfig } from '../config/compile.ts'
import { ConfigError, parseConfigText } from '../config/load.ts'

/** Parse and compile YAML as a load does; the problems as `path: message`, or [] when it loads. */
function problemsOf(yaml: string): string[] {
  try {
    compileConfig(parseConfigText(yaml), yaml)
    return []
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err))
    return err.problems.map((p) => `${p.path}: ${p.message}`)
  }
}

const channel =
  'systems: { s: { kind: http, url: "http://127.0.0.1:9" } }\nchannels:\n  - name: c\n    system: s\n'

describe('compiling rate limits', () => {
  it('turns limit and period into an emission interval, with a burst of the limit by default', () => {
    const config = compileConfig(
      parseConfigText(
        'rateLimits:\n  - { by: ip, limit: 4, period: 2s }\n  - { by: agent, limit: 10, period: 1m, burst: 2 }\n',
      ),
      '',
    )
    const [ip, agent] = config.rateLimits.routes
    assert.deepEqual(ip!.rate, { emissionMs: 500, windowMs: 2000 })
    assert.equal(ip!.failOpen, true)
    assert.deepEqual(agent!.rate, { emissionMs: 6000, windowMs: 12_000 })
    assert.equal(agent!.limit, 10)
  })

  it('gives channels the gateway limits then their own, and counts a gateway channel limit per channel only', () => {
    const config = compileConfig(
      parseConfigText(
        `rateLimits:\n  - { by: global, limit: 100, period: 1s }\n  - { by: channel, limit: 5, period: 1s }\n${channel}    rateLimit: [{ by: ip, limit: 2, period: 1s, failOpen: false }]\n`,
      ),
      '',
    )
    assert.deepEqual(
      config.rateLimits.routes.map((l) => l.source),
      ['rateLimits[0]'],
    )
    assert.deepEqual(
      config.rateLimits.channels.get('c')!.map((l) => [l.source, l.by, l.failOpen]),
      [
        ['rateLimits[0]', 'global', true],
        ['rateLimits[1]', 'channel', true],
        ['channels[0].rateLimit[0]', 'ip', false],
      ],
    )
  })

  it('gives each tool the agent_tool limits that name it or no tool, in a bucket of its own, then its own limits', () => {
    const config = compileConfig(
      parseConfigText(
        'rateLimits:\n  - { by: agent_tool, limit: 3, period: 1m }\n  - { by: agent_tool, tool: openai, limit: 1, period: 1m }\ntools:\n  serpapi: { rateLimit: { by: global, limit: 9, period: 1s } }\n',
      ),
      '',
    )
    const buckets = (tool: string) => config.rateLimits.tools.get(tool)!.map((l) => l.bucket)
    assert.deepEqual(buckets('openai'), ['g0.openai@3/60000/3', 'g1.openai@1/60000/1'])
    assert.deepEqual(buckets('serpapi'), ['g0.serpapi@3/60000/3', 't.serpapi.0@9/1000/9'])
    assert.deepEqual(buckets('gmail'), ['g0.gmail@3/60000/3'])
    assert.deepEqual(config.rateLimits.routes, [], 'agent_tool limits are checked by the tool routes only')
  })

  it('refuses bad limits at load, naming the path of each', () => {
    assert.deepEqual(
      problemsOf(
        `rateLimits:\n  - { by: ip, limit: 5, period: 0 }\n  - { by: agent, tool: serpapi, limit: 1, period: 1s }\n  - { by: agent_tool, tool: nosuch, limit: 1, period: 1s }\ngateway: { trustedProxies: ["10.0.0.1/8", "proxy.local"] }\ntools:\n  openai: { rateLimit: [{ by: path, limit: 1, period: 1s }] }\n${channel}    rateLimit: { by: agent_tool, limit: 1, period: 1s }\n`,
      ),
      [
        'rateLimits[0].period: must be at least 1ms',
        'rateLimits[1].tool: only a limit by agent_tool names a tool',
        'rateLimits[2].tool: unknown tool "nosuch"; tools are serpapi, openai, gmail, http_fetch',
        'channels[0].rateLimit.by: a channel limit counts by global, channel, path, agent, user or ip',
        'tools.openai.rateLimit[0].by: a tool limit counts by global, agent, agent_tool or ip',
        'gateway.trustedProxies[0]: "10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8?',
        'gateway.trustedProxies[1]: "proxy.local" is not an IPv4 or IPv6 address or CIDR network',
      ],
    )
  })

  it('refuses a limit, burst or period of the wrong kind through the schema, with the path', () => {
    const found = problemsOf(
      'rateLimits:\n  - { by: ip, limit: 0, period: 1s }\n  - { by: host, limit: 1, period: 1s }\n  - { by: ip, limit: 1, period: soon, burst: 0 }\n',
    )
    assert.ok(
      found.some((p) => p.startsWith('rateLimits[0].limit')),
      found.join('\n'),
    )
    assert.ok(
      found.some((p) => p.startsWith('rateLimits[1].by')),
      found.join('\n'),
    )
    assert.ok(
      found.some((p) => p.startsWith('rateLimits[2].period')),
      found.join('\n'),
    )
    assert.ok(
      found.some((p) => p.startsWith('rateLimits[2].burst')),
      found.join('\n'),
    )
  })
})

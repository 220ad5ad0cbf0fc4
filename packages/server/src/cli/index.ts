/**
 * The `4runr` command: thin wiring from arguments to the commands. Installed as bin/4runr.js,
 * which also carries the V8 flags it runs with.
 */
import { readFileSync } from 'node:fs'
import { Command } from 'commander'
import { type AuditTailOptions, type AuditVerifyOptions, auditTail, auditVerify } from './audit-commands.ts'
import { configCheck } from './config-check.ts'
import { agentCreate, CliError, type CliIo, keysRotate, tokenGet, tokenRevoke } from './identity-commands.ts'
import { type PolicyTestOptions, policyTest } from './policy-commands.ts'
import { secretsDelete, secretsList, secretsRotateMaster, secretsSet } from './secret-commands.ts'
import { startCommand } from './start.ts'

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string
}

const program = new Command()
program.name('4runr').description('4Runr Gateway: a secure API gateway for AI agents').version(pkg.version)

program
  .command('start')
  .description('start the gateway')
  .option('-c, --config <file>', 'config file (or RUNR_CONFIG)', process.env['RUNR_CONFIG'] ?? '4runr.yaml')
  .action(async (opts: { config: string }) => {
    process.exitCode = await startCommand(opts.config)
  })

const config = program.command('config').description('work with config files')
config
  .command('check')
  .description('validate a config file and report every problem with its path and line')
  .argument('<file>', 'the config file')
  .action(async (file: string) => {
    process.exitCode = await configCheck(file, {
      log: (s) => process.stdout.write(`${s}\n`),
      error: (s) => process.stderr.write(`${s}\n`),
    })
  })

const io: CliIo = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
  env: process.env,
}

/** Run a client command: a CliError is a message and exit code 1, not a stack trace. */
function run<A extends unknown[]>(command: (...args: A) => Promise<void>) {
  return async (...args: A): Promise<void> => {
    try {
      await command(...args)
    } catch (err) {
      if (!(err instanceof CliError)) throw err
      process.stderr.write(`4runr: ${err.message}\n`)
      process.exitCode = 1
    }
  }
}

const adminOption = [
  '--admin <url>',
  'admin listener URL (or RUNR_ADMIN_URL; default http://127.0.0.1:8081)',
] as const
const urlOption = ['--url <url>', 'public listener URL (or RUNR_URL; default http://127.0.0.1:8080)'] as const

const agent = program.command('agent').description('manage agents (needs RUNR_ADMIN_KEY)')
agent
  .command('create')
  .description('create an agent with a new Ed25519 key pair and write its private key to a file (mode 0600)')
  .requiredOption('--name <name>', 'unique agent name')
  .option('--out <file>', 'where to write the private key (default NAME.key.json)')
  .option('--roles <roles>', 'comma-separated roles')
  .option('--label <key=value...>', 'labels')
  .option(...adminOption)
  .option(...urlOption)
  .action(run((opts: Parameters<typeof agentCreate>[1]) => agentCreate(io, opts)))

const token = program.command('token').description('access tokens')
token
  .command('get')
  .description('exchange a signed assertion for an access token; prints the token')
  .requiredOption('--key <file>', 'agent key file from `4runr agent create`')
  .option('--scope <scope>', 'space-separated scopes, e.g. "channel:demo serpapi:search"')
  .option('--intent <intent>', 'declared intent')
  .option('--ttl <ttl>', 'lifetime: seconds or a duration such as 10m')
  .option('--json', 'print the whole token response')
  .option(...urlOption)
  .action(run((opts: Parameters<typeof tokenGet>[1]) => tokenGet(io, opts)))
token
  .command('revoke')
  .description(
    'revoke a token (the token itself or its jti), or every token of an agent (needs RUNR_ADMIN_KEY)',
  )
  .argument('[token-or-jti]', 'the access token or its jti')
  .option('--agent <id>', 'revoke every token of this agent issued until now')
  .option('--kid <kid>', 'with --agent: only tokens obtained with this agent key, and retire the key')
  .option('--reason <text>', 'recorded with the revocation')
  .option(...adminOption)
  .action(
    run((target: string | undefined, opts: Parameters<typeof tokenRevoke>[2]) =>
      tokenRevoke(io, target, opts),
    ),
  )

program
  .command('keys')
  .description("the gateway's token-signing keys (needs RUNR_ADMIN_KEY)")
  .command('rotate')
  .description('sign new tokens with a new key now; tokens signed by older keys stay valid until they expire')
  .option(...adminOption)
  .action(run((opts: { admin?: string }) => keysRotate(io, opts)))

const secrets = program.command('secrets').description('tool secrets, write-only (needs RUNR_ADMIN_KEY)')
const secretsIo = { ...io, stdin: process.stdin }
secrets
  .command('set')
  .description('set a secret; the value is read from stdin, never from the command line')
  .argument('<name>', 'the secret name, e.g. serpapi_key')
  .option('--agent <agent>', "an agent id or name: this agent's own value, used instead of the tool-wide one")
  .option(...adminOption)
  .action(run((name: string, opts: Parameters<typeof secretsSet>[2]) => secretsSet(secretsIo, name, opts)))
secrets
  .command('list')
  .description('list secret names and metadata (never values)')
  .option('--json', 'print the whole answer')
  .option(...adminOption)
  .action(run((opts: Parameters<typeof secretsList>[1]) => secretsList(secretsIo, opts)))
secrets
  .command('delete')
  .description("delete a secret (the tool-wide value, or with --agent that agent's own)")
  .argument('<name>', 'the secret name')
  .option('--agent <agent>', 'an agent id or name')
  .option(...adminOption)
  .action(
    run((name: string, opts: Parameters<typeof secretsDelete>[2]) => secretsDelete(secretsIo, name, opts)),
  )
secrets
  .command('rotate-master')
  .description(
    'seal every secret under a new master key without downtime: generated by the gateway when it keeps its key in its data directory, else read from stdin with --key-stdin',
  )
  .option('--key-stdin', 'read the new master key (32 bytes in base64) from stdin')
  .option(...adminOption)
  .action(run((opts: Parameters<typeof secretsRotateMaster>[1]) => secretsRotateMaster(secretsIo, opts)))

const policy = program.command('policy').description('policies (needs RUNR_ADMIN_KEY)')
policy
  .command('test')
  .description(
    'explain how the running gateway would decide a call: decision, deciding rule, and why other rules did not match',
  )
  .requiredOption('--agent <agent>', 'agent name or id')
  .option('--tool <tool>', 'the tool called')
  .option('--action <action>', 'the tool action')
  .option('--channel <channel>', 'or a channel')
  .option('--path <path>', 'channel-relative path (default /)')
  .option('--method <method>', 'channel method (default GET)')
  .option('--args <json>', 'the call arguments as JSON')
  .option('--intent <intent>', 'the token intent')
  .option('--scope <scope>', 'the token scope (default: not checked)')
  .option('--json', 'print the whole answer')
  .option(...adminOption)
  .action(run((opts: PolicyTestOptions) => policyTest(io, opts)))

const audit = program.command('audit').description('the tamper-evident audit ledger (needs RUNR_ADMIN_KEY)')
audit
  .command('verify')
  .description(
    'recompute the hash chains and checkpoint signatures; prints the first broken entry of each chain and exits 1 when one is broken',
  )
  .option('--since <seq>', 'verify from this sequence number on')
  .option('--instance <name>', 'only the chain of this instance')
  .option('--json', 'print the whole report')
  .option(...adminOption)
  .action(run((opts: AuditVerifyOptions) => auditVerify(io, opts)))
audit
  .command('tail')
  .description('print the latest entries, then new ones as they are written (Ctrl-C to stop)')
  .option('--principal <principal>', 'only this principal, e.g. agent:ag_123')
  .option('--target <target>', 'only this target, e.g. tool:serpapi')
  .option('--decision <decision>', 'allow, deny or approval_required')
  .option('--kind <kind>', 'call, token or admin')
  .option('--interval <ms>', 'how often to poll (default 1000)')
  .option('--json', 'one JSON entry per line')
  .option(...adminOption)
  .action(run((opts: AuditTailOptions) => auditTail(io, opts)))

await program.parseAsync()

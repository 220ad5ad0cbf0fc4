/**
 * `4runr start`: run the gateway until SIGTERM/SIGINT, reload on SIGHUP, and print where it
 * listens with commands to paste. The banner goes to stderr so stdout stays pure JSON logs.
 */
import { ConfigError } from '../config/load.ts'
import { type RunningGateway, startGateway } from '../main.ts'

function banner(gateway: RunningGateway, file: string, env: NodeJS.ProcessEnv): string {
  const config = gateway.config()
  const lines = [
    '',
    `4Runr Gateway is running (config ${file}, version ${config.version})`,
    `  public  ${gateway.publicUrl}`,
    `  admin   ${gateway.adminUrl}`,
  ]
  if (gateway.adminKeys.generated !== undefined) {
    lines.push(
      '',
      'No admin key was configured, so one was generated. It is shown only this once; only its hash is kept',
      `(delete ${config.dataDir}/admin-key.sha256 to get a new one):`,
      '',
      `  export RUNR_ADMIN_KEY=${gateway.adminKeys.generated}`,
    )
  } else if (env['RUNR_ADMIN_KEY'] === undefined) {
    lines.push(
      '',
      'Admin key: the one configured, or the one printed on the first start (set RUNR_ADMIN_KEY to it).',
    )
  }
  const first = config.channels[0]
  if (first !== undefined) {
    const hello = first.system.kind === 'demo' ? '/hello' : '/'
    lines.push('', 'Try:')
    if (first.prefixAsWritten !== '')
      lines.push(`  curl -i ${gateway.publicUrl}${first.prefixAsWritten}${hello}`)
    lines.push(`  curl -i ${gateway.publicUrl}/api/request/${first.name}${hello}`)
  } else {
    lines.push('', 'Try:')
  }
  lines.push(
    `  curl ${gateway.publicUrl}/health`,
    `  curl -H "Authorization: Bearer $RUNR_ADMIN_KEY" ${gateway.adminUrl}/v1/config`,
    `  curl -H "Authorization: Bearer $RUNR_ADMIN_KEY" ${gateway.adminUrl}/metrics`,
    '',
  )
  const guarded = first?.rules.find((r) => !r.public && !r.disabled && r.match !== 'all')
  if (first !== undefined && guarded !== undefined && first.prefixAsWritten !== '') {
    const roles = [...new Set([...(guarded.roles?.values() ?? [])].flat())]
    lines.push(
      `An agent with a token (npx 4runr … inside this repository; needs RUNR_ADMIN_KEY):`,
      `  npx 4runr agent create --name my-agent${roles.length > 0 ? ` --roles ${roles.join(',')}` : ''} --admin ${gateway.adminUrl} --url ${gateway.publicUrl}`,
      `  TOKEN=$(npx 4runr token get --key my-agent.key.json --scope channel:${first.name})`,
      `  curl -i -H "Authorization: Bearer $TOKEN" ${gateway.publicUrl}${first.prefixAsWritten}${guarded.base}/x`,
      '  npx 4runr token revoke "$TOKEN"',
      '',
    )
  }
  if (config.raw.tools?.demo === true) {
    lines.push(
      'Tools (local fakes of SerpAPI, OpenAI and Gmail; the gateway injects their credentials):',
      `  TOKEN=$(npx 4runr token get --key my-agent.key.json --scope "serpapi:search openai:chat")`,
      `  curl -s -X POST ${gateway.publicUrl}/v1/tools/serpapi/search -H "Authorization: Bearer $TOKEN" \\`,
      `    -H 'content-type: application/json' -d '{"q":"espresso","num":3}'`,
      `  npx 4runr policy test --agent my-agent --tool serpapi --action search --args '{"q":"x","num":50}'`,
      '',
    )
  }
  return lines.join('\n')
}

/** Start the gateway from `file` and keep it running; resolves with the exit code when stopped. */
export async function startCommand(file: string, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let gateway: RunningGateway
  try {
    gateway = await startGateway({ configFile: file, env })
  } catch (err) {
    if (err instanceof ConfigError) process.stderr.write(`${err.message}\n`)
    else process.stderr.write(`4runr: cannot start: ${(err as Error).message}\n`)
    return 1
  }
  process.stderr.write(`${banner(gateway, file, env)}\n`)
  return new Promise((exit) => {
    const shutdown = (signal: string): void => {
      gateway.logger.info({ signal }, 'shutting down')
      gateway.stop().then(
        () => exit(0),
        (err: unknown) => {
          process.stderr.write(`4runr: shutdown failed: ${(err as Error).message}\n`)
          exit(1)
        },
      )
    }
    process.once('SIGTERM', () => shutdown('SIGTERM'))
    process.once('SIGINT', () => shutdown('SIGINT'))
    process.on('SIGHUP', () => void gateway.reload())
  })
}

/**
 * CLI commands for tool secrets: `secrets set`, `secrets list`, `secrets delete` and
 * `secrets rotate-master`, over the admin API with RUNR_ADMIN_KEY. Values and master keys are read
 * from stdin, never from arguments, so they stay out of shell history and `ps`.
 */
import { CliError, type CliIo } from './identity-commands.ts'

/** CliIo with the standard input the values are read from. */
export interface SecretsIo extends CliIo {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean }
}

/** The most stdin is read for a value: the gateway's limit (64 KiB) plus a line break. */
const maxInputBytes = 64 * 1024 + 2

function adminBase(io: CliIo, flag: string | undefined): string {
  return (flag ?? io.env['RUNR_ADMIN_URL'] ?? 'http://127.0.0.1:8081').replace(/\/+$/, '')
}

async function admin(
  io: CliIo,
  flag: string | undefined,
  method: string,
  path: string,
  body?: unknown,
): Promise<Record<string, unknown>> {
  const key = io.env['RUNR_ADMIN_KEY']
  if (key === undefined || key === '') throw new CliError('set RUNR_ADMIN_KEY to an admin key of the gateway')
  const url = `${adminBase(io, flag)}${path}`
  let res: Response
  try {
    res = await fetch(url, {
      method,
      headers: {
        authorization: `Bearer ${key}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    })
  } catch (err) {
    throw new CliError(
      `cannot reach ${new URL(url).origin}: ${(err as Error).cause ?? (err as Error).message}`,
    )
  }
  const text = await res.text()
  let parsed: Record<string, unknown> = {}
  try {
    parsed = text === '' ? {} : (JSON.parse(text) as Record<string, unknown>)
  } catch {
    // not JSON; reported below by status
  }
  if (!res.ok) {
    const error = parsed['error'] as { code?: string; message?: string } | undefined
    throw new CliError(`${res.status} ${error?.code ?? ''}: ${error?.message ?? text.slice(0, 200)}`.trim())
  }
  return parsed
}

/** All of stdin as text, refusing more than `maxInputBytes`; the error never shows the input. */
async function readStdin(io: SecretsIo, what: string): Promise<string> {
  if (io.stdin.isTTY === true) io.err(`enter the ${what}, then press Ctrl-D\n`)
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of io.stdin) {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : (chunk as Buffer)
    size += bytes.length
    if (size > maxInputBytes) throw new CliError(`the ${what} on stdin is longer than 64 KiB`)
    chunks.push(bytes)
  }
  // `echo value |` and a terminal both end the value with a line break that is not part of it.
  return Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '')
}

const secretPath = (name: string) => `/v1/secrets/${encodeURIComponent(name)}`

/** `4runr secrets set NAME [--agent A]`: the value comes from stdin. */
export async function secretsSet(
  io: SecretsIo,
  name: string,
  opts: { agent?: string; admin?: string },
): Promise<void> {
  const value = await readStdin(io, 'secret value')
  if (value === '')
    throw new CliError('no value on stdin: pipe it in, e.g. `printf %s "$VALUE" | 4runr secrets set NAME`')
  await admin(io, opts.admin, 'PUT', secretPath(name), {
    value,
    ...(opts.agent === undefined ? {} : { agent: opts.agent }),
  })
  io.err(`secret ${name} set${opts.agent === undefined ? '' : ` for agent ${opts.agent}`}\n`)
}

/** `4runr secrets list`: names and metadata, one line each (the whole answer with --json). */
export async function secretsList(io: SecretsIo, opts: { admin?: string; json?: boolean }): Promise<void> {
  const answer = await admin(io, opts.admin, 'GET', '/v1/secrets')
  if (opts.json) {
    io.out(`${JSON.stringify(answer, null, 2)}\n`)
    return
  }
  type Row = {
    name: string
    agent: string | null
    keyId: string
    createdAt: string
    rotatedAt: string | null
  }
  const rows = (answer['secrets'] as Row[]).map((s) => [
    s.name,
    s.agent ?? '*',
    s.keyId,
    s.createdAt,
    s.rotatedAt ?? '-',
  ])
  const table = [['NAME', 'AGENT', 'MASTER KEY', 'CREATED', 'ROTATED'], ...rows]
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)))
  for (const row of table)
    io.out(
      `${row
        .map((cell, i) => cell.padEnd(widths[i]!))
        .join('  ')
        .trimEnd()}\n`,
    )
}

/** `4runr secrets delete NAME [--agent A]`. */
export async function secretsDelete(
  io: SecretsIo,
  name: string,
  opts: { agent?: string; admin?: string },
): Promise<void> {
  const query = opts.agent === undefined ? '' : `?agent=${encodeURIComponent(opts.agent)}`
  await admin(io, opts.admin, 'DELETE', `${secretPath(name)}${query}`)
  io.err(`secret ${name} deleted${opts.agent === undefined ? '' : ` for agent ${opts.agent}`}\n`)
}

/**
 * `4runr secrets rotate-master [--key-stdin]`: seal every secret under a new master key (from
 * stdin, or generated by the gateway when it keeps its key in its data directory), then print what
 * the operator must still do.
 */
export async function secretsRotateMaster(
  io: SecretsIo,
  opts: { keyStdin?: boolean; admin?: string },
): Promise<void> {
  let body: { key?: string } = {}
  if (opts.keyStdin) {
    const key = (await readStdin(io, 'new master key')).trim()
    if (key === '')
      throw new CliError(
        'no key on stdin: pipe one in, e.g. `openssl rand -base64 32 | 4runr secrets rotate-master --key-stdin`',
      )
    body = { key }
  }
  const answer = await admin(io, opts.admin, 'POST', '/v1/secrets/rotate-master', body)
  io.err(
    `${answer['resealed'] as number} secret value(s) sealed again; master key ${answer['previousKeyId'] as string} -> ${answer['keyId'] as string}\n`,
  )
  for (const line of answer['next'] as string[]) io.err(`${line}\n`)
  io.out(`${answer['keyId'] as string}\n`)
}

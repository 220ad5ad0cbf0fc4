/**
 * CLI commands for agent identity: `agent create`, `token get`, `token revoke`, `keys rotate`.
 * They talk to a running gateway over HTTP like any client: the admin API with RUNR_ADMIN_KEY,
 * and the public token endpoint with an assertion signed by the agent's own key.
 */
import { randomUUID } from 'node:crypto'
import { chmod, readFile, writeFile } from 'node:fs/promises'
import { importJWK, SignJWT } from 'jose'

export interface CliIo {
  out(text: string): void
  err(text: string): void
  env: NodeJS.ProcessEnv
}

export interface AgentKeyFile {
  agentId: string
  name: string
  kid: string
  privateKeyJwk: Record<string, unknown>
  /** The gateway's public URL, so `token get` needs no flag. */
  gatewayUrl: string
}

export class CliError extends Error {}

function adminUrl(io: CliIo, flag: string | undefined): string {
  return (flag ?? io.env['RUNR_ADMIN_URL'] ?? 'http://127.0.0.1:8081').replace(/\/+$/, '')
}

function publicUrl(io: CliIo, flag: string | undefined): string {
  return (flag ?? io.env['RUNR_URL'] ?? 'http://127.0.0.1:8080').replace(/\/+$/, '')
}

async function call(url: string, init: RequestInit): Promise<Record<string, unknown>> {
  let res: Response
  try {
    res = await fetch(url, init)
  } catch (err) {
    throw new CliError(
      `cannot reach ${new URL(url).origin}: ${(err as Error).cause ?? (err as Error).message}`,
    )
  }
  const text = await res.text()
  let body: Record<string, unknown> = {}
  try {
    body = text === '' ? {} : (JSON.parse(text) as Record<string, unknown>)
  } catch {
    // not JSON; reported below by status
  }
  if (!res.ok) {
    const error = body['error'] as { code?: string; message?: string } | undefined
    throw new CliError(`${res.status} ${error?.code ?? ''}: ${error?.message ?? text.slice(0, 200)}`.trim())
  }
  return body
}

function adminInit(io: CliIo, body: unknown): RequestInit {
  const key = io.env['RUNR_ADMIN_KEY']
  if (key === undefined || key === '') throw new CliError('set RUNR_ADMIN_KEY to an admin key of the gateway')
  return {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  }
}

/** `4runr agent create --name NAME [--out key.json]`: the private key is written once, mode 0600. */
export async function agentCreate(
  io: CliIo,
  opts: { name: string; out?: string; roles?: string; label?: string[]; admin?: string; url?: string },
): Promise<void> {
  const labels: Record<string, string> = {}
  for (const pair of opts.label ?? []) {
    const eq = pair.indexOf('=')
    if (eq <= 0) throw new CliError(`--label takes key=value, got "${pair}"`)
    labels[pair.slice(0, eq)] = pair.slice(eq + 1)
  }
  const roles = opts.roles === undefined ? undefined : opts.roles.split(',').filter((r) => r !== '')
  const created = await call(
    `${adminUrl(io, opts.admin)}/v1/agents`,
    adminInit(io, { name: opts.name, labels, ...(roles === undefined ? {} : { roles }) }),
  )
  const file: AgentKeyFile = {
    agentId: created['id'] as string,
    name: created['name'] as string,
    kid: created['kid'] as string,
    privateKeyJwk: created['privateKeyJwk'] as Record<string, unknown>,
    gatewayUrl: publicUrl(io, opts.url),
  }
  const out = opts.out ?? `${opts.name}.key.json`
  // The mode applies at creation; chmod covers a file that already existed with looser bits.
  await writeFile(out, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600, flag: 'w' })
  await chmod(out, 0o600)
  io.err(`created agent ${file.name} (${file.agentId}); private key written to ${out} (mode 0600)\n`)
  io.out(`${file.agentId}\n`)
}

async function readKeyFile(path: string): Promise<AgentKeyFile> {
  let parsed: AgentKeyFile
  try {
    parsed = JSON.parse(await readFile(path, 'utf8')) as AgentKeyFile
  } catch (err) {
    throw new CliError(`cannot read key file ${path}: ${(err as Error).message}`)
  }
  if (typeof parsed.agentId !== 'string' || typeof parsed.privateKeyJwk !== 'object') {
    throw new CliError(`${path} is not an agent key file (from 4runr agent create)`)
  }
  return parsed
}

/** Sign an RFC 7523 assertion for the gateway `issuer` with the agent's key. */
export async function signAssertion(
  key: AgentKeyFile,
  issuer: string,
  lifetimeSeconds = 60,
): Promise<string> {
  const privateKey = await importJWK(key.privateKeyJwk, 'EdDSA')
  const now = Math.floor(Date.now() / 1000)
  return new SignJWT({})
    .setProtectedHeader({ alg: 'EdDSA', kid: key.kid, typ: 'JWT' })
    .setIssuer(key.agentId)
    .setSubject(key.agentId)
    .setAudience(issuer)
    .setIssuedAt(now)
    .setExpirationTime(now + lifetimeSeconds)
    .setJti(randomUUID())
    .sign(privateKey)
}

/** `4runr token get --key key.json`: prints the access token (the whole answer with --json). */
export async function tokenGet(
  io: CliIo,
  opts: { key: string; scope?: string; intent?: string; ttl?: string; url?: string; json?: boolean },
): Promise<void> {
  const key = await readKeyFile(opts.key)
  const base = publicUrl(io, opts.url ?? key.gatewayUrl)
  const meta = await call(`${base}/.well-known/oauth-authorization-server`, { method: 'GET' })
  // The assertion's audience is the issuer, whatever address this client reaches the gateway by.
  const issuer = meta['issuer'] as string
  const endpoint = `${base}/v1/token`
  const form = new URLSearchParams({
    grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer',
    assertion: await signAssertion(key, issuer),
  })
  if (opts.scope !== undefined) form.set('scope', opts.scope)
  if (opts.intent !== undefined) form.set('intent', opts.intent)
  if (opts.ttl !== undefined) form.set('ttl', opts.ttl)
  const answer = await call(endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: form.toString(),
  })
  io.out(opts.json ? `${JSON.stringify(answer, null, 2)}\n` : `${answer['access_token'] as string}\n`)
}

/** `4runr token revoke JTI|TOKEN` or `--agent ID [--kid KID]`. */
export async function tokenRevoke(
  io: CliIo,
  target: string | undefined,
  opts: { agent?: string; kid?: string; reason?: string; admin?: string },
): Promise<void> {
  let body: Record<string, string>
  if (opts.agent !== undefined) {
    if (target !== undefined) throw new CliError('give either a token/jti or --agent, not both')
    body = { agentId: opts.agent, ...(opts.kid === undefined ? {} : { kid: opts.kid }) }
  } else if (target !== undefined) {
    // A whole JWT has two dots; anything else is taken as a jti.
    body = target.split('.').length === 3 ? { token: target } : { jti: target }
  } else {
    throw new CliError('give a token, a jti, or --agent ID')
  }
  if (opts.reason !== undefined) body['reason'] = opts.reason
  const revoked = await call(`${adminUrl(io, opts.admin)}/v1/revocations`, adminInit(io, body))
  io.err(`revoked (${revoked['kind'] as string}) ${(revoked['jti'] ?? revoked['agentId']) as string}\n`)
  io.out(`${revoked['id'] as string}\n`)
}

/** `4runr keys rotate`: the gateway signs with a new key from now on. */
export async function keysRotate(io: CliIo, opts: { admin?: string }): Promise<void> {
  const rotated = await call(`${adminUrl(io, opts.admin)}/v1/keys/rotate`, adminInit(io, {}))
  io.out(`${rotated['kid'] as string}\n`)
}

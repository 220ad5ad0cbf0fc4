/**
 * CLI commands for agent identity: `agent create`, `token get`, `token revoke`, `keys rotate`.
 * They talk to a running gateway over HTTP like any client: the admin API with RUNR_ADMIN_KEY,
 * and the public token endpoint with an assertion signed by the agent's own key.
 */
import { randomUUID } from 'node:crypto'
import { type FileHandle, open, readFile, unlink } from 'node:fs/promises'
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
  /**
   * The gateway's issuer at creation. `token get` signs only for this issuer, so a key file or
   * `--url` pointing at another server cannot obtain an assertion valid at the real gateway.
   * Missing in key files written before it was recorded.
   */
  issuer?: string
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

function adminAuthorization(io: CliIo): string {
  const key = io.env['RUNR_ADMIN_KEY']
  if (key === undefined || key === '') throw new CliError('set RUNR_ADMIN_KEY to an admin key of the gateway')
  return `Bearer ${key}`
}

function adminInit(io: CliIo, body: unknown): RequestInit {
  return {
    method: 'POST',
    headers: { authorization: adminAuthorization(io), 'content-type': 'application/json' },
    body: JSON.stringify(body),
  }
}

/** The issuer the gateway at `base` announces in its RFC 8414 metadata. */
async function fetchIssuer(base: string): Promise<string> {
  const meta = await call(`${base}/.well-known/oauth-authorization-server`, { method: 'GET' })
  const issuer = meta['issuer']
  if (typeof issuer !== 'string' || issuer === '') {
    throw new CliError(`${base}/.well-known/oauth-authorization-server names no issuer`)
  }
  return issuer
}

/** Create `path` for the private key; never an existing file, nor through a symlink. */
async function createKeyFile(path: string): Promise<FileHandle> {
  try {
    // 'wx' is O_CREAT|O_EXCL: fails on any existing path (a dangling symlink included), so another
    // key file is never overwritten and no file with looser permissions ever sees the secret.
    return await open(path, 'wx', 0o600)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'EEXIST') throw new CliError(`${path} exists; choose another --out or remove it`)
    throw new CliError(`cannot create key file ${path}: ${(err as Error).message}`)
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
  const admin = adminUrl(io, opts.admin)
  const init = adminInit(io, { name: opts.name, labels, ...(roles === undefined ? {} : { roles }) })
  const gatewayUrl = publicUrl(io, opts.url)
  // A key file without the issuer could not get tokens safely, so an unreachable public listener
  // stops us before the agent exists.
  let issuer: string
  try {
    issuer = await fetchIssuer(gatewayUrl)
  } catch (err) {
    if (!(err instanceof CliError)) throw err
    throw new CliError(`cannot read the gateway's issuer (set --url or RUNR_URL): ${err.message}`)
  }
  // The file is created before the agent: the gateway returns the private key only once, so every
  // reason not to be able to keep it (existing file, missing directory, permissions) must show up
  // while nothing has been created yet.
  const out = opts.out ?? `${opts.name}.key.json`
  const handle = await createKeyFile(out)
  let created: Record<string, unknown>
  try {
    created = await call(`${admin}/v1/agents`, init)
  } catch (err) {
    // Nothing was written; leave no empty file behind to block the next attempt.
    await handle.close().catch(() => {})
    await unlink(out).catch(() => {})
    throw err
  }
  const file: AgentKeyFile = {
    agentId: created['id'] as string,
    name: created['name'] as string,
    kid: created['kid'] as string,
    privateKeyJwk: created['privateKeyJwk'] as Record<string, unknown>,
    gatewayUrl,
    issuer,
  }
  try {
    await handle.writeFile(`${JSON.stringify(file, null, 2)}\n`)
    await handle.close()
  } catch (err) {
    // Rare (disk full, I/O error), but the key is then lost: delete the agent so the same name can
    // be created again, and say so.
    await handle.close().catch(() => {})
    await unlink(out).catch(() => {})
    const removed = await fetch(`${admin}/v1/agents/${encodeURIComponent(file.agentId)}`, {
      method: 'DELETE',
      headers: { authorization: adminAuthorization(io) },
    }).then(
      (res) => res.ok,
      () => false,
    )
    throw new CliError(
      `cannot write key file ${out}: ${(err as Error).message}; agent ${file.agentId} ${
        removed ? 'was deleted again' : 'exists without a usable key: delete it'
      }`,
    )
  }
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
  if (
    typeof parsed.agentId !== 'string' ||
    typeof parsed.privateKeyJwk !== 'object' ||
    (parsed.issuer !== undefined && typeof parsed.issuer !== 'string')
  ) {
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
  // The assertion's audience is the issuer, whatever address this client reaches the gateway by;
  // but only the issuer recorded at creation, or a server posing as the gateway would receive an
  // assertion it could replay at the real one.
  const issuer = await fetchIssuer(base)
  if (key.issuer === undefined) {
    io.err(
      `4runr: warning: ${opts.key} records no issuer (written by an older 4runr); signing for "${issuer}", ` +
        `the issuer ${base} claims. Recreate the key file to pin the gateway.\n`,
    )
  } else if (key.issuer !== issuer) {
    throw new CliError(
      `${base} claims issuer "${issuer}" but ${opts.key} was created for issuer "${key.issuer}"; ` +
        'refusing to sign an assertion for another gateway',
    )
  }
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

/** One admin API call for the CLI: RUNR_ADMIN_KEY as the bearer, the error body as the message. */
import { CliError, type CliIo } from './identity-commands.ts'

export function adminBase(io: CliIo, flag: string | undefined): string {
  return (flag ?? io.env['RUNR_ADMIN_URL'] ?? 'http://127.0.0.1:8081').replace(/\/+$/, '')
}

export async function adminRequest(
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
    const error = parsed['error'] as { code?: string; message?: string; details?: unknown } | undefined
    const problems = (error?.details as { problems?: { path: string; message: string }[] } | undefined)
      ?.problems
    const lines = (problems ?? []).map((p) => `\n  ${p.path}: ${p.message}`).join('')
    throw new CliError(
      `${res.status} ${error?.code ?? ''}: ${error?.message ?? text.slice(0, 200)}`.trim() + lines,
    )
  }
  return parsed
}

/**
 * Helpers for end-to-end tests of tools: agents with tokens and secrets set through the admin API,
 * exactly as an operator would, and the JSON a tool call answers.
 */
import assert from 'node:assert/strict'
import type { TestGateway } from './gateway.ts'

/** The common error body (DESIGN §15). */
export interface ErrorBody {
  error: { code: string; message: string; status: number; details?: Record<string, unknown> }
}

/** Create an agent named `name` and an admin-issued token for `scope`; answers the token. */
export async function agentToken(gw: TestGateway, name: string, scope: string): Promise<string> {
  const created = await gw.admin('/v1/agents', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name }),
  })
  assert.equal(created.status, 201, await created.clone().text())
  const { id } = (await created.json()) as { id: string }
  return issueToken(gw, id, scope)
}

/** Another admin-issued token for agent `id`. */
export async function issueToken(gw: TestGateway, id: string, scope: string): Promise<string> {
  const issued = await gw.admin(`/v1/agents/${id}/tokens`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ scope }),
  })
  assert.equal(issued.status, 200, await issued.clone().text())
  return ((await issued.json()) as { access_token: string }).access_token
}

/** `PUT /v1/secrets/{name}` through the admin API (write-only, 204). */
export async function putSecret(gw: TestGateway, name: string, value: string): Promise<void> {
  const res = await gw.admin(`/v1/secrets/${encodeURIComponent(name)}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ value }),
  })
  assert.equal(res.status, 204, await res.clone().text())
}

/** `DELETE /v1/secrets/{name}`. */
export async function deleteSecret(gw: TestGateway, name: string): Promise<void> {
  const res = await gw.admin(`/v1/secrets/${encodeURIComponent(name)}`, { method: 'DELETE' })
  assert.ok(res.status === 204 || res.status === 404, await res.clone().text())
}

/** Read an error answer and check its status and code; answers the body. */
export async function expectError(res: Response, status: number, code: string): Promise<ErrorBody['error']> {
  const text = await res.text()
  assert.equal(res.status, status, text)
  const body = JSON.parse(text) as ErrorBody
  assert.equal(body.error.code, code, text)
  return body.error
}

import assert from 'node:assert/strict'
import { after, before, beforeEach, describe, it } from 'node:test'
import { request } from 'undici'
import { type FakeGmail, startFakeGmail } from './gmail.ts'

const accessToken = 'ya29.fake-access-token-0123456789'
const sendPath = '/gmail/v1/users/me/messages/send'

function raw(lines: string[]): string {
  return Buffer.from(lines.join('\r\n')).toString('base64url')
}

interface GoogleError {
  error: { code: number; message: string; status: string; errors?: Array<{ reason: string }> }
}

describe('the fake Gmail API', () => {
  let fake: FakeGmail
  const call = async (
    method: 'GET' | 'POST',
    path: string,
    body?: unknown,
    token: string | null = accessToken,
  ) => {
    const res = await request(`${fake.url}${path}`, {
      method,
      headers: {
        ...(token === null ? {} : { authorization: `Bearer ${token}` }),
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    })
    return {
      status: res.statusCode,
      headers: res.headers,
      body: (await res.body.json()) as Record<string, unknown>,
    }
  }

  before(async () => {
    fake = await startFakeGmail({ accessToken })
  })
  after(() => fake.close())
  beforeEach(() => {
    fake.sent.length = 0
  })

  it('sends a plain message and keeps it decoded', async () => {
    const message = raw([
      'From: Agent <agent@example.com>',
      'To: Alice <alice@example.org>, bob@example.net',
      'Subject: Quarterly numbers',
      'Content-Type: text/plain; charset="UTF-8"',
      '',
      'Hello Alice,',
      'the numbers are in.',
    ])
    const { status, body } = await call('POST', sendPath, { raw: message })
    assert.equal(status, 200)
    assert.match(String(body.id), /^[0-9a-f]{16}$/)
    assert.equal(body.threadId, body.id)
    assert.deepEqual(body.labelIds, ['SENT'])
    assert.equal(fake.sent.length, 1)
    const sent = fake.sent[0]!
    assert.equal(sent.id, body.id)
    assert.equal(sent.to, 'Alice <alice@example.org>, bob@example.net')
    assert.equal(sent.from, 'Agent <agent@example.com>')
    assert.equal(sent.subject, 'Quarterly numbers')
    assert.equal(sent.body, 'Hello Alice,\r\nthe numbers are in.')
    assert.equal(sent.headers['content-type'], 'text/plain; charset="UTF-8"')
  })

  it('decodes encoded-word subjects, folded headers, base64 and quoted-printable bodies', async () => {
    const subject = `=?UTF-8?B?${Buffer.from('Grüße ✓').toString('base64')}?=`
    await call('POST', sendPath, {
      raw: raw([
        'To: carol@example.com',
        `Subject: ${subject}`,
        'X-Long: first part',
        '  continued',
        'Content-Type: text/plain; charset=utf-8',
        'Content-Transfer-Encoding: base64',
        '',
        Buffer.from('Body with ünïcödé').toString('base64'),
      ]),
    })
    await call('POST', sendPath, {
      raw: raw([
        'To: dave@example.com',
        'Subject: =?utf-8?Q?caf=C3=A9_time?=',
        'Content-Transfer-Encoding: quoted-printable',
        '',
        'caf=C3=A9 at noon, a long line that is=',
        ' soft-broken',
      ]),
    })
    const [b64, qp] = fake.sent
    assert.equal(b64!.subject, 'Grüße ✓')
    assert.equal(b64!.headers.subject, subject)
    assert.equal(b64!.headers['x-long'], 'first part  continued')
    assert.equal(b64!.body, 'Body with ünïcödé')
    assert.equal(b64!.from, undefined)
    assert.equal(qp!.subject, 'café time')
    assert.equal(qp!.body, 'café at noon, a long line that is soft-broken')
  })

  it('takes the first text/plain part of a multipart message', async () => {
    await call('POST', sendPath, {
      raw: raw([
        'To: erin@example.com',
        'Subject: parts',
        'MIME-Version: 1.0',
        'Content-Type: multipart/alternative; boundary="b1"',
        '',
        '--b1',
        'Content-Type: text/html; charset=utf-8',
        '',
        '<p>html</p>',
        '--b1',
        'Content-Type: text/plain; charset=utf-8',
        '',
        'the plain text',
        '--b1--',
        '',
      ]),
    })
    assert.equal(fake.sent[0]!.body, 'the plain text')
  })

  it('keeps a thread id given with the message', async () => {
    const { body } = await call('POST', sendPath, {
      raw: raw(['To: f@example.com', '', 'x']),
      threadId: 'abc123',
    })
    assert.equal(body.threadId, 'abc123')
    assert.notEqual(body.id, 'abc123')
  })

  it('answers the profile, counting sent messages', async () => {
    const before = await call('GET', '/gmail/v1/users/me/profile')
    assert.equal(before.status, 200)
    assert.equal(before.body.emailAddress, 'agent@example.com')
    assert.equal(typeof before.body.messagesTotal, 'number')
    assert.equal(typeof before.body.threadsTotal, 'number')
    assert.match(String(before.body.historyId), /^\d+$/)
    await call('POST', sendPath, { raw: raw(['To: g@example.com', '', 'x']) })
    const afterSend = await call('GET', '/gmail/v1/users/agent%40example.com/profile')
    assert.equal(afterSend.body.messagesTotal, (before.body.messagesTotal as number) + 1)
    assert.ok(Number(afterSend.body.historyId) > Number(before.body.historyId))
  })

  it('refuses a missing or wrong token with 401 UNAUTHENTICATED and WWW-Authenticate', async () => {
    for (const token of [null, 'ya29.wrong']) {
      const { status, headers, body } = await call('GET', '/gmail/v1/users/me/profile', undefined, token)
      assert.equal(status, 401)
      assert.match(String(headers['www-authenticate']), /^Bearer /)
      const { error } = body as unknown as GoogleError
      assert.equal(error.code, 401)
      assert.equal(error.status, 'UNAUTHENTICATED')
      assert.match(error.message, /^Request had invalid authentication credentials/)
      assert.equal(error.errors![0]!.reason, 'authError')
    }
    const refused = await call('POST', sendPath, { raw: raw(['To: h@example.com', '', 'x']) }, 'ya29.wrong')
    assert.equal(refused.status, 401)
    assert.equal(fake.sent.length, 0)
    assert.ok(!JSON.stringify(fake.requests).includes(accessToken))
  })

  it('refuses a missing or invalid raw message, a missing To and a bad address with 400 INVALID_ARGUMENT', async () => {
    const cases: Array<[unknown, RegExp]> = [
      [{}, /'raw' RFC822 payload message string/],
      [{ raw: 42 }, /'raw' RFC822 payload/],
      [{ raw: 'not base64!!' }, /Base64 decoding failed/],
      [{ raw: raw(['Subject: no recipient', '', 'x']) }, /^Recipient address required$/],
      [{ raw: raw(['To: not-an-address', '', 'x']) }, /^Invalid To header$/],
      [{ raw: raw(['To a@example.com', '', 'x']) }, /Invalid RFC 5322 header line/],
      ['[1,2]', /Invalid JSON payload/],
    ]
    for (const [body, message] of cases) {
      const res = await call('POST', sendPath, body)
      assert.equal(res.status, 400, JSON.stringify(body))
      const { error } = res.body as unknown as GoogleError
      assert.equal(error.code, 400)
      assert.equal(error.status, 'INVALID_ARGUMENT')
      assert.match(error.message, message)
    }
    assert.equal(fake.sent.length, 0)
  })

  it('answers 404 NOT_FOUND for unknown paths and 403 for another mailbox', async () => {
    const unknown = await call('GET', '/gmail/v1/users/me/drafts')
    assert.equal(unknown.status, 404)
    assert.equal((unknown.body as unknown as GoogleError).error.status, 'NOT_FOUND')
    const wrongMethod = await call('GET', sendPath)
    assert.equal(wrongMethod.status, 404)
    const other = await call('GET', '/gmail/v1/users/someone%40example.com/profile')
    assert.equal(other.status, 403)
    assert.equal((other.body as unknown as GoogleError).error.status, 'PERMISSION_DENIED')
  })

  it('answers an injected status in Google error shape, without sending', async () => {
    fake.faults.add({ kind: 'status', status: 429 }, { path: sendPath })
    const res = await call('POST', sendPath, { raw: raw(['To: i@example.com', '', 'x']) })
    assert.equal(res.status, 429)
    assert.equal((res.body as unknown as GoogleError).error.status, 'RESOURCE_EXHAUSTED')
    assert.equal(fake.sent.length, 0)
  })

  it('still sends when only the answer is lost to a truncate fault', async () => {
    fake.faults.add({ kind: 'truncate' }, { path: sendPath })
    const res = await request(`${fake.url}${sendPath}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ raw: raw(['To: j@example.com', '', 'x']) }),
    })
    await assert.rejects(res.body.text())
    assert.equal(fake.sent.length, 1)
  })
})

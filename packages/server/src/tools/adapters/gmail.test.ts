import assert from 'node:assert/strict'
import { after, before, beforeEach, describe, it } from 'node:test'
import { gatewayRejection } from '../../../../../test/support/rejection.ts'
import { type FakeGmail, startFakeGmail } from '../../fakes/gmail.ts'
import { type ActionRunner, createActionRunner } from '../test-helpers.ts'
import { gmail } from './gmail.ts'
import { buildMessage, encodedWords, messageProblems } from './gmail-message.ts'

const token = 'ya29.gmail-adapter-test-token'

describe('the gmail tool', () => {
  let fake: FakeGmail
  let runner: ActionRunner
  const run = (action: string, params: unknown, secret = token) =>
    runner.run(gmail, action, params, { settings: { url: fake.url }, secret })

  before(async () => {
    fake = await startFakeGmail({ accessToken: token, emailAddress: 'agent@example.com' })
    runner = createActionRunner()
  })
  after(async () => {
    await runner.close()
    await fake.close()
  })
  beforeEach(() => fake.faults.clear())

  it('sends a message the mailbox decodes to the same recipient, subject and text', async () => {
    const result = await run('send', {
      to: 'Ada Lovelace <ada@example.com>',
      subject: 'Weekly report',
      text: 'Line one\nLine two\n',
    })
    assert.ok('data' in result)
    const data = result.data as { id: string; threadId: string; labelIds: string[] }
    assert.deepEqual(data.labelIds, ['SENT'])
    const sent = fake.sent.at(-1)!
    assert.equal(sent.id, data.id)
    assert.equal(sent.to, 'Ada Lovelace <ada@example.com>')
    assert.equal(sent.subject, 'Weekly report')
    assert.equal(sent.body, 'Line one\r\nLine two\r\n', 'line ends are CRLF on the wire')
    assert.equal(fake.requests.at(-1)!.authorized, true, 'the token went as a bearer token')
    assert.equal(fake.requests.at(-1)!.path, '/gmail/v1/users/me/messages/send')
  })

  it('encodes a non-ASCII subject, display name and body so they arrive intact', async () => {
    const subject = 'Grüße aus Zürich — 東京 🚀 '.repeat(4).trim()
    const text = 'Ça marche très bien.\n日本語のテキスト'
    await run('send', { to: ['Zoë Ørsted <zoe@example.org>'], subject, text })
    const sent = fake.sent.at(-1)!
    assert.equal(sent.subject, subject)
    assert.equal(sent.to, 'Zoë Ørsted <zoe@example.org>')
    assert.equal(sent.body, 'Ça marche très bien.\r\n日本語のテキスト')
    assert.match(sent.headers['content-transfer-encoding']!, /base64/i)
  })

  it('sends to several recipients with cc and bcc', async () => {
    await run('send', {
      to: 'a@example.com, b@example.com',
      cc: ['c@example.com'],
      bcc: 'd@example.com',
      subject: 'hi',
      text: 'x',
    })
    const sent = fake.sent.at(-1)!
    assert.equal(sent.to, 'a@example.com, b@example.com')
    assert.equal(sent.headers['cc'], 'c@example.com')
    assert.equal(sent.headers['bcc'], 'd@example.com')
  })

  it('refuses CR or LF in any header field before anything is sent (header injection)', async () => {
    const before = fake.sent.length
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ to: 'a@example.com', subject: 'hi\r\nBcc: evil@example.net', text: 'x' }, 'subject'],
      [{ to: 'a@example.com\nBcc: evil@example.net', subject: 'hi', text: 'x' }, 'to'],
      [{ to: ['a@example.com', 'b@example.com\r\nX-Evil: 1'], subject: 'hi', text: 'x' }, 'to[1]'],
      [{ to: 'a@example.com', cc: 'c@example.com\rBcc: e@example.net', subject: 'hi', text: 'x' }, 'cc'],
    ]
    for (const [params, path] of cases) {
      const problems = runner.problems(gmail, 'send', params)
      assert.ok(
        problems.some((p) => p.path === path),
        `${path}: ${JSON.stringify(problems)}`,
      )
      // The builder refuses on its own too, whatever called it.
      assert.throws(() => buildMessage(params as never), TypeError)
      assert.ok(messageProblems(params as never).some((p) => p.path === path))
    }
    assert.equal(fake.sent.length, before, 'nothing was sent')
  })

  it('lists every address that is not one, once the schema is satisfied', () => {
    const problems = runner.problems(gmail, 'send', {
      to: ['ok@example.com', 'not-an-address', 'x@y'],
      bcc: 'also wrong',
      subject: 's',
      text: 't',
    })
    assert.deepEqual(
      problems.map((p) => p.path),
      ['to[1]', 'to[2]', 'bcc'],
    )
  })

  it('lists schema problems all at once: missing fields and unknown ones', () => {
    const problems = runner.problems(gmail, 'send', { subject: 1, from: 'me@example.com' })
    assert.deepEqual(problems, [
      { path: '(root)', message: 'missing required key "to"' },
      { path: '(root)', message: 'missing required key "text"' },
      { path: 'from', message: 'unknown key "from"' },
      { path: 'subject', message: 'expected string' },
    ])
  })

  it('keeps encoded words within 75 characters and whole characters', () => {
    const words = encodedWords('é'.repeat(100)).split('\r\n ')
    assert.ok(words.length > 1)
    for (const word of words) {
      assert.ok(word.length <= 75, word)
      const inner = /^=\?UTF-8\?B\?(.*)\?=$/.exec(word)![1]!
      assert.doesNotMatch(Buffer.from(inner, 'base64').toString('utf8'), /\uFFFD/)
    }
  })

  it('quotes a display name with specials and encodes plain text that looks like an encoded word', () => {
    // A comma splits a string list: the array form keeps such a name whole.
    const message = buildMessage({ to: ['Doe, J. <j@example.com>'], subject: '=?x?=', text: '' })
    assert.match(message, /^To: "Doe, J\." <j@example\.com>\r$/m)
    assert.match(message, /^Subject: =\?UTF-8\?B\?/m)
    assert.equal(messageProblems({ to: 'Doe, J. <j@example.com>', subject: '', text: '' })[0]!.path, 'to')
  })

  it('reads the profile of the mailbox', async () => {
    const result = await run('profile', {})
    assert.ok('data' in result)
    assert.equal((result.data as { emailAddress: string }).emailAddress, 'agent@example.com')
    assert.equal(fake.requests.at(-1)!.path, '/gmail/v1/users/me/profile')
    assert.deepEqual(runner.problems(gmail, 'profile', { user: 'x' }).length, 1)
  })

  it('marks send as not idempotent and profile as idempotent', () => {
    assert.equal(gmail.actions['send']!.idempotent, false)
    assert.equal(gmail.actions['profile']!.idempotent, true)
  })

  it('turns a refused token and upstream faults into 502 upstream_error with the status', async () => {
    let err = await gatewayRejection(run('profile', {}, 'ya29.wrong'))
    assert.deepEqual([err.code, err.details?.['upstreamStatus']], ['upstream_error', 401])
    assert.doesNotMatch(err.message, /ya29/)

    fake.faults.add({ kind: 'status', status: 503 })
    err = await gatewayRejection(run('send', { to: 'a@example.com', subject: 's', text: 't' }))
    assert.deepEqual([err.code, err.details?.['upstreamStatus']], ['upstream_error', 503])

    fake.faults.add({ kind: 'non-json' })
    err = await gatewayRejection(run('profile', {}))
    assert.deepEqual([err.code, err.details?.['upstreamStatus']], ['upstream_error', 200])
  })
})

/**
 * A fake Gmail API: `users.messages.send` (JSON `{raw}`, a base64url RFC 5322 message) and
 * `users.getProfile`, with Google's error shapes. Sent messages are decoded and kept on the
 * handle, so a test can assert exactly what the gateway built: recipients, subject (RFC 2047
 * encoded words decoded), body (base64 / quoted-printable decoded; the first text/plain part of
 * a multipart message) and every header as sent.
 */
import {
  bearerToken,
  checkSecret,
  type FakeReply,
  type FakeRequest,
  type FakeServer,
  startFakeServer,
} from './fake-server.ts'

export interface FakeGmailOptions {
  /** The OAuth access token the gateway must send as `Authorization: Bearer <token>`. */
  accessToken: string
  /** The mailbox's address, answered by `profile` and accepted as the `userId` in paths. */
  emailAddress?: string
  host?: string
  port?: number
}

/** A message the fake accepted, decoded. */
export interface SentMessage {
  id: string
  threadId: string
  /** The To header, encoded words decoded. */
  to: string
  from?: string
  subject?: string
  /** The text body, transfer encoding undone. */
  body: string
  /** Every header as sent (lower-case names, folded lines joined, repeated ones joined by ", "). */
  headers: Record<string, string>
}

/** A running fake Gmail; `sent` holds what it accepted, oldest first (bounded). */
export interface FakeGmail extends FakeServer {
  readonly sent: SentMessage[]
}

const maxSent = 1000
const unauthenticated = {
  error: {
    code: 401,
    message:
      'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other ' +
      'valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.',
    errors: [
      {
        message: 'Invalid Credentials',
        domain: 'global',
        reason: 'authError',
        location: 'Authorization',
        locationType: 'header',
      },
    ],
    status: 'UNAUTHENTICATED',
  },
}

const statusNames: Record<number, string> = {
  400: 'INVALID_ARGUMENT',
  401: 'UNAUTHENTICATED',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  409: 'ABORTED',
  413: 'INVALID_ARGUMENT',
  429: 'RESOURCE_EXHAUSTED',
  500: 'INTERNAL',
  501: 'UNIMPLEMENTED',
  503: 'UNAVAILABLE',
  504: 'DEADLINE_EXCEEDED',
}
const reasons: Record<number, string> = {
  400: 'invalidArgument',
  403: 'forbidden',
  404: 'notFound',
  429: 'rateLimitExceeded',
  500: 'backendError',
  503: 'backendError',
}

function googleError(code: number, message: string) {
  return {
    error: {
      code,
      message,
      errors: [{ message, domain: 'global', reason: reasons[code] ?? 'failedPrecondition' }],
      status: statusNames[code] ?? (code >= 500 ? 'INTERNAL' : 'FAILED_PRECONDITION'),
    },
  }
}

function badRequest(message: string): FakeReply {
  return { status: 400, body: googleError(400, message) }
}

class MessageError extends Error {}

interface Part {
  headers: Record<string, string>
  body: string
}

/** Split a message or MIME part into unfolded headers (RFC 5322 §2.2.3) and its body. */
function splitPart(text: string): Part {
  const match = /\r?\n\r?\n/.exec(text)
  const head = match === null ? text : text.slice(0, match.index)
  const body = match === null ? '' : text.slice(match.index + match[0].length)
  const headers: Record<string, string> = {}
  for (const line of head.replace(/\r?\n(?=[ \t])/g, '').split(/\r?\n/)) {
    if (line === '') continue
    const colon = line.indexOf(':')
    if (colon <= 0 || !/^[\x21-\x39\x3b-\x7e]+$/.test(line.slice(0, colon))) {
      throw new MessageError('Invalid RFC 5322 header line.')
    }
    const name = line.slice(0, colon).toLowerCase()
    const value = line.slice(colon + 1).trim()
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`
  }
  return { headers, body }
}

function charsetOf(contentType: string | undefined): BufferEncoding {
  const charset = /charset="?([^";\s]+)"?/i.exec(contentType ?? '')?.[1]?.toLowerCase()
  return charset === 'iso-8859-1' || charset === 'latin1' || charset === 'us-ascii' ? 'latin1' : 'utf8'
}

function quotedPrintable(text: string): Buffer {
  const bytes: number[] = []
  const soft = text.replace(/=\r?\n/g, '')
  for (let i = 0; i < soft.length; i++) {
    const hex = soft.slice(i + 1, i + 3)
    if (soft[i] === '=' && /^[0-9A-Fa-f]{2}$/.test(hex)) {
      bytes.push(Number.parseInt(hex, 16))
      i += 2
    } else bytes.push(...Buffer.from(soft[i]!, 'utf8'))
  }
  return Buffer.from(bytes)
}

function decodeBody(part: Part): string {
  const encoding = (part.headers['content-transfer-encoding'] ?? '7bit').toLowerCase()
  const charset = charsetOf(part.headers['content-type'])
  if (encoding === 'base64') return Buffer.from(part.body.replace(/\s+/g, ''), 'base64').toString(charset)
  if (encoding === 'quoted-printable') return quotedPrintable(part.body).toString(charset)
  return part.body
}

/** The text of a part: itself, or for multipart the first text/plain part found depth first. */
function textOf(part: Part, depth = 0): string | undefined {
  const type = part.headers['content-type'] ?? 'text/plain'
  if (!/^multipart\//i.test(type)) return /^text\/plain/i.test(type) ? decodeBody(part) : undefined
  const boundary = /boundary="?([^";]+)"?/i.exec(type)?.[1]
  if (boundary === undefined || depth > 5) throw new MessageError('Invalid multipart message.')
  const sections = part.body.split(new RegExp(`\\r?\\n?--${boundary.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`))
  for (const section of sections.slice(1)) {
    if (section.startsWith('--')) break
    const found = textOf(splitPart(section.replace(/^[ \t]*\r?\n/, '')), depth + 1)
    if (found !== undefined) return found
  }
  return undefined
}

/** Decode RFC 2047 encoded words (`=?charset?B|Q?text?=`), joining adjacent ones. */
function decodeWords(value: string): string {
  return value
    .replace(/(\?=)\s+(=\?)/g, '$1$2')
    .replace(/=\?([^?]+)\?([BbQq])\?([^?]*)\?=/g, (_, charset: string, kind: string, text: string) => {
      const encoding = charsetOf(`charset=${charset}`)
      if (kind.toUpperCase() === 'B') return Buffer.from(text, 'base64').toString(encoding)
      return quotedPrintable(text.replace(/_/g, ' ')).toString(encoding)
    })
}

/** Every address in an address list has a local part, an `@` and a domain. */
function validAddresses(list: string): boolean {
  const addresses = list
    .replace(/"[^"]*"/g, '')
    .split(',')
    .map((a) => a.trim())
  return addresses.every((a) => /^(?:[^<>]*<)?[^\s@<>]+@[^\s@<>]+\.[^\s@<>]+>?$/.test(a))
}

function parseMessage(raw: unknown): Omit<SentMessage, 'id' | 'threadId'> {
  if (typeof raw !== 'string' || raw === '') {
    throw new MessageError(
      "'raw' RFC822 payload message string or uploading message via /upload/* URL required",
    )
  }
  if (!/^[A-Za-z0-9_-]+={0,2}$/.test(raw)) {
    throw new MessageError(`Invalid value at 'message.raw' (TYPE_BYTES), Base64 decoding failed.`)
  }
  const message = splitPart(Buffer.from(raw, 'base64url').toString('utf8'))
  const to = message.headers.to
  if (to === undefined || to === '') throw new MessageError('Recipient address required')
  const decodedTo = decodeWords(to)
  if (!validAddresses(decodedTo)) throw new MessageError('Invalid To header')
  const from = message.headers.from
  const subject = message.headers.subject
  return {
    to: decodedTo,
    ...(from === undefined ? {} : { from: decodeWords(from) }),
    ...(subject === undefined ? {} : { subject: decodeWords(subject) }),
    body: textOf(message) ?? message.body,
    headers: message.headers,
  }
}

/** Start a fake Gmail API on a free loopback port (or `host`/`port`). */
export async function startFakeGmail(options: FakeGmailOptions): Promise<FakeGmail> {
  const emailAddress = options.emailAddress ?? 'agent@example.com'
  const sent: SentMessage[] = []
  let sentTotal = 0
  const baseHistory = 100_000

  const send = (req: FakeRequest): FakeReply => {
    const body = req.body
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      return badRequest('Invalid JSON payload received. Expected an object with a raw message.')
    }
    let parsed: Omit<SentMessage, 'id' | 'threadId'>
    try {
      parsed = parseMessage((body as { raw?: unknown }).raw)
    } catch (err) {
      if (err instanceof MessageError) return badRequest(err.message)
      throw err
    }
    sentTotal += 1
    const id = (0x18f0000000000000n + BigInt(sentTotal)).toString(16)
    const asked = (body as { threadId?: unknown }).threadId
    const threadId = typeof asked === 'string' && asked !== '' ? asked : id
    sent.push({ id, threadId, ...parsed })
    if (sent.length > maxSent) sent.splice(0, sent.length - maxSent)
    return { status: 200, body: { id, threadId, labelIds: ['SENT'] } }
  }

  const server = await startFakeServer({
    host: options.host,
    port: options.port,
    authorize: (headers) => checkSecret(bearerToken(headers), options.accessToken),
    errorBody: (status, message) => googleError(status, message),
    handle(req) {
      const match = /^\/gmail\/v1\/users\/([^/]+)\/(profile|messages\/send)$/.exec(req.path)
      const user = match === null ? undefined : decodeURIComponent(match[1]!)
      const known = user === 'me' || user === emailAddress
      const route = `${req.method} ${match?.[2] ?? ''}`
      if (match === null || (route !== 'GET profile' && route !== 'POST messages/send')) {
        return { status: 404, body: googleError(404, 'Requested entity was not found.') }
      }
      if (!req.authorized) {
        return {
          status: 401,
          headers: {
            'www-authenticate': 'Bearer realm="https://accounts.google.com/", error="invalid_token"',
          },
          body: unauthenticated,
        }
      }
      if (!known) return { status: 403, body: googleError(403, `Delegation denied for ${emailAddress}`) }
      if (route === 'POST messages/send') return send(req)
      return {
        status: 200,
        body: {
          emailAddress,
          messagesTotal: 42 + sentTotal,
          threadsTotal: 17 + sentTotal,
          historyId: String(baseHistory + sentTotal),
        },
      }
    },
  })
  return Object.assign(server, { sent })
}

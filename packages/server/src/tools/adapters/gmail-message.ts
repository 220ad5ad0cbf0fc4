/**
 * Building the RFC 5322 message that Gmail's `users.messages.send` takes as `raw`: CRLF line ends,
 * header values that can never start a new header (a CR or LF in one is refused: header
 * injection), non-ASCII or unsafe text in encoded words (RFC 2047), a UTF-8 text body in base64
 * when it is not plain short-lined ASCII (RFC 2045).
 */
import type { ParamProblem } from '../types.ts'

export interface MessageFields {
  to: string | readonly string[]
  subject: string
  text: string
  cc?: string | readonly string[]
  bcc?: string | readonly string[]
}

const lineBreak = /[\r\n]/
// RFC 5322 §3.2.3 dot-atom: atext runs separated by single dots; ASCII only (no SMTPUTF8).
const addrSpec =
  /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$/
const named = /^(.*?)\s*<([^<>]*)>$/
const printableAscii = /^[\x20-\x7e]*$/
// RFC 5322 §3.2.3 atext plus space: a display name made of these needs no quoting.
const plainPhrase = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*$/
// 45 bytes encode to 60 base64 characters: with `=?UTF-8?B?` and `?=`, 72 of the 75 allowed.
const wordBytes = 45

function list(value: string | readonly string[]): readonly string[] {
  return typeof value === 'string' ? value.split(',').map((a) => a.trim()) : value
}

/** RFC 2047 encoded words for `text`, each a whole number of characters, folded by CRLF SP. */
export function encodedWords(text: string): string {
  const words: string[] = []
  let current: string[] = []
  let size = 0
  for (const char of text) {
    const bytes = Buffer.byteLength(char)
    if (size + bytes > wordBytes && current.length > 0) {
      words.push(current.join(''))
      current = []
      size = 0
    }
    current.push(char)
    size += bytes
  }
  if (current.length > 0) words.push(current.join(''))
  return words.map((w) => `=?UTF-8?B?${Buffer.from(w).toString('base64')}?=`).join('\r\n ')
}

/** Text for an unstructured header (Subject): as is when plain ASCII, else encoded words. */
function unstructured(text: string): string {
  // `=?` in plain text would be read as the start of an encoded word.
  return printableAscii.test(text) && !text.includes('=?') ? text : encodedWords(text)
}

/** A display name: as is, quoted, or encoded words. */
function phrase(name: string): string {
  if (!printableAscii.test(name) || name.includes('=?')) return encodedWords(name)
  if (plainPhrase.test(name)) return name
  return `"${name.replace(/[\\"]/g, '\\$&')}"`
}

/** Check one address list; answers the header value or adds problems. */
function addresses(
  value: string | readonly string[],
  path: string,
  problems: ParamProblem[],
): string | undefined {
  const out: string[] = []
  const entries = list(value)
  entries.forEach((entry, index) => {
    const at = typeof value === 'string' ? path : `${path}[${index}]`
    const shown = JSON.stringify(entry.length > 80 ? `${entry.slice(0, 80)}…` : entry)
    if (lineBreak.test(entry)) {
      problems.push({ path: at, message: 'must not contain a line break (header injection)' })
      return
    }
    const m = named.exec(entry)
    const address = m === null ? entry : m[2]!.trim()
    const name = m === null ? '' : m[1]!.replace(/^"(.*)"$/, '$1').trim()
    if (!addrSpec.test(address) || address.length > 254) {
      problems.push({
        path: at,
        message: `${shown} is not an e-mail address (name@example.com or Name <name@example.com>)`,
      })
      return
    }
    out.push(name === '' ? address : `${phrase(name)} <${address}>`)
  })
  if (entries.length === 0) problems.push({ path, message: 'needs at least one address' })
  // One address per line: folding keeps every line short whatever the list's length.
  return out.length === entries.length ? out.join(',\r\n ') : undefined
}

/** Every problem with the fields; empty when `buildMessage` will succeed. */
export function messageProblems(fields: MessageFields): ParamProblem[] {
  const problems: ParamProblem[] = []
  addresses(fields.to, 'to', problems)
  if (fields.cc !== undefined) addresses(fields.cc, 'cc', problems)
  if (fields.bcc !== undefined) addresses(fields.bcc, 'bcc', problems)
  if (lineBreak.test(fields.subject)) {
    problems.push({ path: 'subject', message: 'must not contain a line break (header injection)' })
  }
  return problems
}

/** The body's lines as CRLF text, in 7bit when it is plain short-lined ASCII, else base64. */
function body(text: string): { encoding: '7bit' | 'base64'; content: string } {
  const crlf = text.replace(/\r\n|\r|\n/g, '\r\n')
  const lines = crlf.split('\r\n')
  if (/^[\t\x20-\x7e]*$/.test(lines.join('')) && lines.every((l) => l.length <= 998)) {
    return { encoding: '7bit', content: crlf }
  }
  const base64 = Buffer.from(crlf).toString('base64')
  const wrapped = base64.match(/.{1,76}/g) ?? []
  return { encoding: 'base64', content: wrapped.join('\r\n') }
}

/**
 * The RFC 5322 message for `fields`. Throws a TypeError when `messageProblems` would report
 * anything: nothing unchecked ever reaches a header.
 */
export function buildMessage(fields: MessageFields): string {
  const problems: ParamProblem[] = []
  const to = addresses(fields.to, 'to', problems)
  const cc = fields.cc === undefined ? undefined : addresses(fields.cc, 'cc', problems)
  const bcc = fields.bcc === undefined ? undefined : addresses(fields.bcc, 'bcc', problems)
  if (lineBreak.test(fields.subject)) problems.push({ path: 'subject', message: 'line break' })
  if (problems.length > 0 || to === undefined) {
    throw new TypeError(`invalid message fields: ${problems.map((p) => p.path).join(', ')}`)
  }
  const { encoding, content } = body(fields.text)
  const headers = [
    `To: ${to}`,
    ...(cc === undefined ? [] : [`Cc: ${cc}`]),
    // Gmail delivers to Bcc recipients and strips the header from what others receive.
    ...(bcc === undefined ? [] : [`Bcc: ${bcc}`]),
    `Subject: ${unstructured(fields.subject)}`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=UTF-8',
    `Content-Transfer-Encoding: ${encoding}`,
  ]
  return `${headers.join('\r\n')}\r\n\r\n${content}`
}

/**
 * Request-target path normalisation (RFC 3986 §6.2.2 and §5.2.4). Rules match the normalised
 * path and the upstream receives that same path, so what a rule saw is what the backend serves:
 * `..`, `%2e%2e`, `//` and friends cannot slip past a rule.
 *
 * Refused outright (400), because backends disagree on what they mean: an encoded `/` or `\`
 * (`%2f`, `%5c`), a raw `\`, an encoded NUL or control byte, malformed `%` escapes, and dot
 * segments carrying `;` parameters (`..;/`, which some servlet containers treat as `..`).
 */

const hex = '0123456789ABCDEF'
/** Needs work beyond the fast path: escapes, dots, repeated slashes, backslashes. */
const needsWork = /[%\\]|\/\/|\/\.|;/

/** The normalised path, or an error message when the path must be refused. */
export type NormalizedPath = { ok: true; path: string } | { ok: false; reason: string }

function isUnreserved(code: number): boolean {
  return (
    (code >= 0x41 && code <= 0x5a) || // A-Z
    (code >= 0x61 && code <= 0x7a) || // a-z
    (code >= 0x30 && code <= 0x39) || // 0-9
    code === 0x2d || // -
    code === 0x2e || // .
    code === 0x5f || // _
    code === 0x7e // ~
  )
}

function hexValue(code: number): number {
  if (code >= 0x30 && code <= 0x39) return code - 0x30
  if (code >= 0x41 && code <= 0x46) return code - 0x37
  if (code >= 0x61 && code <= 0x66) return code - 0x57
  return -1
}

/** Decode escapes of unreserved characters, upper-case the rest; null when a segment must be refused. */
function normalizeSegment(segment: string): string | { reason: string } {
  if (!segment.includes('%')) return segment
  let out = ''
  for (let i = 0; i < segment.length; i++) {
    const ch = segment.charCodeAt(i)
    if (ch !== 0x25) {
      out += segment[i]
      continue
    }
    const hi = hexValue(segment.charCodeAt(i + 1))
    const lo = hexValue(segment.charCodeAt(i + 2))
    if (hi < 0 || lo < 0) return { reason: 'malformed percent-encoding in the path' }
    const byte = hi * 16 + lo
    if (byte === 0x2f || byte === 0x5c) return { reason: 'encoded slash or backslash in the path' }
    if (byte < 0x20 || byte === 0x7f) return { reason: 'encoded control character in the path' }
    out += isUnreserved(byte) ? String.fromCharCode(byte) : `%${hex[hi]}${hex[lo]}`
    i += 2
  }
  return out
}

/**
 * Normalise the path part of a request target (no query). Empty segments collapse, dot segments
 * resolve without climbing above the root, and a trailing slash is kept.
 */
export function normalizePath(path: string): NormalizedPath {
  if (path.charCodeAt(0) !== 0x2f) return { ok: false, reason: 'the path must start with /' }
  if (!needsWork.test(path)) return { ok: true, path }
  if (path.includes('\\')) return { ok: false, reason: 'backslash in the path' }

  const input = path.split('/')
  const output: string[] = []
  let trailingSlash = false
  for (let i = 1; i < input.length; i++) {
    const segment = normalizeSegment(input[i]!)
    if (typeof segment !== 'string') return { ok: false, reason: segment.reason }
    const last = i === input.length - 1
    if (segment === '' || segment === '.') {
      trailingSlash = last
      continue
    }
    if (segment === '..') {
      output.pop()
      trailingSlash = last
      continue
    }
    if (/^\.\.?;/.test(segment)) return { ok: false, reason: 'dot segment with parameters in the path' }
    output.push(segment)
    trailingSlash = false
  }
  if (output.length === 0) return { ok: true, path: '/' }
  return { ok: true, path: `/${output.join('/')}${trailingSlash ? '/' : ''}` }
}

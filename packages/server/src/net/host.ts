/**
 * Host names in one canonical spelling, so that a domain rule and an SSRF check judge the host
 * the connection will really reach: lower case, IDN as punycode (UTS #46 via the WHATWG URL
 * parser), no trailing dot, IPv4 in dotted decimal whatever notation it was written in
 * (`2130706433`, `0x7f000001` and `0177.0.0.1` are all 127.0.0.1), IPv6 without brackets.
 */

/** The canonical host of an absolute http(s) URL, its userinfo dropped; undefined when it has none. */
export function hostOfUrl(url: URL): string | undefined {
  return canonicalHost(url.hostname)
}

// The URL parser silently drops tabs and newlines and cuts at `#`, `/`, `?` and `@`, so
// `a#b`, `@host` and `ex\tample.com` would come out as other, valid hosts: refuse them first.
const SMUGGLING = /[\u0000-\u0020\u007f#/?@\\]/

// RFC 1035 §2.3.4 limits, checked on the encoded (punycode) form that goes on the wire.
const MAX_NAME = 253
const MAX_LABEL = 63

/**
 * The canonical form of a host name or IP literal, or undefined when it is not a valid host
 * (empty, spaces, forbidden characters, an empty or over-long label, an IDN label that cannot
 * be encoded).
 */
export function canonicalHost(host: string): string | undefined {
  if (host === '' || SMUGGLING.test(host)) return undefined
  const bracketed = host.startsWith('[')
  if (bracketed && !host.endsWith(']')) return undefined
  let parsed: URL
  try {
    // The http scheme makes the parser apply host rules: IDNA, IPv4 number forms, IPv6 compression.
    parsed = new URL(`http://${host.includes(':') && !bracketed ? `[${host}]` : host}/`)
  } catch {
    return undefined
  }
  // A host smuggling a path, port, userinfo, query or fragment is not a host.
  if (
    parsed.pathname !== '/' ||
    parsed.port !== '' ||
    parsed.username !== '' ||
    parsed.search !== '' ||
    parsed.hash !== ''
  ) {
    return undefined
  }
  let name = parsed.hostname
  if (name.startsWith('[')) return name.slice(1, -1)
  if (name.endsWith('.')) name = name.slice(0, -1)
  if (name === '' || name.length > MAX_NAME) return undefined
  for (const label of name.split('.')) {
    if (label === '' || label.length > MAX_LABEL) return undefined
  }
  return name
}

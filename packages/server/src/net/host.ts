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

/**
 * The canonical form of a host name or IP literal, or undefined when it is not a valid host
 * (empty, spaces, forbidden characters, an IDN label that cannot be encoded).
 */
export function canonicalHost(host: string): string | undefined {
  if (host === '') return undefined
  let parsed: URL
  try {
    // The http scheme makes the parser apply host rules: IDNA, IPv4 number forms, IPv6 compression.
    parsed = new URL(`http://${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}/`)
  } catch {
    return undefined
  }
  // A host smuggling a path, port, userinfo or query is not a host.
  if (parsed.pathname !== '/' || parsed.port !== '' || parsed.username !== '' || parsed.search !== '') {
    return undefined
  }
  let name = parsed.hostname
  if (name.startsWith('[')) return name.slice(1, -1)
  if (name.endsWith('.')) name = name.slice(0, -1)
  return name === '' ? undefined : name
}

/**
 * Networks an operator explicitly opens to outbound fetches (`tools.http_fetch.allowNetworks`):
 * an address inside one passes the SSRF check even when it is private or loopback, which is
 * what tests against local servers and intranet deployments need.
 */
import { inPrefix, type ParsedIp, parseIp } from './address.ts'

/** A parsed allow-list of networks. */
export interface AllowNetworks {
  /** The networks in canonical CIDR form (`10.0.0.0/8`, `::1/128`), e.g. to key a cache. */
  readonly cidrs: readonly string[]
  /** Whether `address` (an IP address string) lies in one of the networks. */
  contains(address: string): boolean
}

/** One refused entry of the list. */
export interface NetworkProblem {
  readonly index: number
  readonly reason: string
}

/** The result of parsing an allow-list. */
export type ParseNetworksResult =
  | { readonly ok: true; readonly networks: AllowNetworks }
  | { readonly ok: false; readonly problems: readonly NetworkProblem[] }

interface Network {
  readonly family: 4 | 6
  readonly bytes: Uint8Array
  readonly prefix: number
}

// An IPv4-mapped IPv6 address reaches the IPv4 host, so the two spellings must match the same
// entries (`127.0.0.0/8` covers `::ffff:127.0.0.1`, and `::ffff:10.0.0.0/104` is `10.0.0.0/8`).
function unmap(ip: ParsedIp): ParsedIp {
  const b = ip.bytes
  if (ip.family === 6 && b[10] === 0xff && b[11] === 0xff && b.subarray(0, 10).every((x) => x === 0)) {
    return { family: 4, bytes: b.slice(12) }
  }
  return ip
}

function format(network: Network): string {
  const b = network.bytes
  if (network.family === 4) return `${b.join('.')}/${network.prefix}`
  const words: string[] = []
  for (let i = 0; i < 16; i += 2) words.push(((b[i]! << 8) | b[i + 1]!).toString(16))
  // Compress the longest run of zero words (RFC 5952 §4.2) so equal networks key equally.
  let best = -1
  let bestLen = 1
  for (let i = 0; i < 8; ) {
    let j = i
    while (j < 8 && words[j] === '0') j++
    if (j - i > bestLen) {
      best = i
      bestLen = j - i
    }
    i = j === i ? i + 1 : j
  }
  const text =
    best === -1
      ? words.join(':')
      : `${words.slice(0, best).join(':')}::${words.slice(best + bestLen).join(':')}`
  return `${text}/${network.prefix}`
}

function quote(entry: string): string {
  return JSON.stringify(entry.length > 60 ? `${entry.slice(0, 60)}…` : entry)
}

function parseEntry(entry: unknown): Network | string {
  if (typeof entry !== 'string') return `a ${typeof entry} is not a network; write it as a string`
  const text = entry.trim()
  if (text === '') return 'an empty string is not a network'
  const slash = text.indexOf('/')
  const addressText = slash === -1 ? text : text.slice(0, slash)
  if (addressText.includes('%')) return `${quote(entry)} has an IPv6 zone, which a network cannot have`
  const parsed = parseIp(addressText)
  if (parsed === undefined) return `${quote(entry)} is not an IPv4 or IPv6 address or CIDR network`
  const max = parsed.family === 4 ? 32 : 128
  let prefix = max
  if (slash !== -1) {
    const prefixText = text.slice(slash + 1)
    if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > max) {
      return `${quote(entry)} has an invalid prefix length (0 to ${max})`
    }
    prefix = Number(prefixText)
  }
  const zeroed = parsed.bytes.slice()
  for (let bit = prefix; bit < max; bit++) zeroed[bit >> 3]! &= ~(0x80 >> (bit & 7))
  if (!zeroed.every((byte, i) => byte === parsed.bytes[i])) {
    // Almost always a typo for the network; refusing beats silently widening or narrowing it.
    const meant = format({ family: parsed.family, bytes: zeroed, prefix })
    return `${quote(entry)} has host bits set; did you mean ${meant}?`
  }
  // Host bits are zero by now, so any IPv4-mapped network here is at least a /96.
  const ip = unmap(parsed)
  return { family: ip.family, bytes: ip.bytes, prefix: ip.family === parsed.family ? prefix : prefix - 96 }
}

function createAllowNetworks(networks: readonly Network[]): AllowNetworks {
  const cidrs = Object.freeze([...new Set(networks.map(format))])
  return Object.freeze({
    cidrs,
    contains(address: string): boolean {
      if (networks.length === 0) return false
      const parsed = parseIp(address)
      if (parsed === undefined) return false
      const ip = unmap(parsed)
      for (const n of networks) {
        if (n.family === ip.family && inPrefix(ip.bytes, n.bytes, n.prefix)) return true
      }
      return false
    },
  })
}

/**
 * Parse a list of networks (`10.0.0.0/8`, `::1/128`, or a single address such as `10.1.2.3`).
 * Every bad entry is reported with its index and a reason that quotes it, for config errors.
 */
export function parseNetworks(list: readonly unknown[]): ParseNetworksResult {
  const networks: Network[] = []
  const problems: NetworkProblem[] = []
  list.forEach((entry, index) => {
    const result = parseEntry(entry)
    if (typeof result === 'string') problems.push({ index, reason: result })
    else networks.push(result)
  })
  if (problems.length > 0) return { ok: false, problems }
  return { ok: true, networks: createAllowNetworks(networks) }
}

/**
 * Which IP addresses an outbound fetch may connect to (DESIGN §6, SSRF). Only globally routable
 * unicast passes: loopback, private, link-local, multicast, unspecified, reserved and cloud
 * metadata addresses are refused, and an IPv6 address that carries an IPv4 one (mapped, NAT64,
 * 6to4, IPv4-compatible) is judged by the IPv4 address it reaches. Ranges from the IANA
 * special-purpose registries (RFC 6890 and successors).
 */
import { isIPv4, isIPv6 } from 'node:net'

/** Why an address is refused. */
export type AddressCategory =
  | 'loopback'
  | 'private'
  | 'link_local'
  | 'unique_local'
  | 'multicast'
  | 'unspecified'
  | 'broadcast'
  | 'reserved'
  | 'shared'
  | 'metadata'
  | 'documentation'
  | 'benchmarking'
  | 'invalid'

/** The verdict on one address. */
export type AddressVerdict =
  | { readonly allowed: true }
  | { readonly allowed: false; readonly category: AddressCategory }

/** An IP address as bytes in network order: 4 of them for IPv4, 16 for IPv6. */
export interface ParsedIp {
  readonly family: 4 | 6
  readonly bytes: Uint8Array
}

const ALLOWED: AddressVerdict = Object.freeze({ allowed: true })
const refusals = new Map<AddressCategory, AddressVerdict>()
function refuse(category: AddressCategory): AddressVerdict {
  let verdict = refusals.get(category)
  if (verdict === undefined) {
    verdict = Object.freeze({ allowed: false, category })
    refusals.set(category, verdict)
  }
  return verdict
}

/**
 * Parse an IP address in the notations DNS and `canonicalHost` produce: dotted-decimal IPv4
 * (no octal, hex or short forms: those are a host-name question, see host.ts) or IPv6, with an
 * optional `%zone`. Undefined for anything else.
 */
export function parseIp(address: string): ParsedIp | undefined {
  if (isIPv4(address)) return { family: 4, bytes: v4Bytes(address) }
  const zone = address.indexOf('%')
  const bare = zone === -1 ? address : address.slice(0, zone)
  if (!isIPv6(bare)) return undefined
  return { family: 6, bytes: v6Bytes(bare) }
}

function v4Bytes(text: string): Uint8Array {
  return Uint8Array.from(text.split('.'), Number)
}

function v6Bytes(text: string): Uint8Array {
  const groups = (part: string): number[] => {
    if (part === '') return []
    const out: number[] = []
    for (const group of part.split(':')) {
      if (group.includes('.')) {
        const [a, b, c, d] = v4Bytes(group)
        out.push((a! << 8) | b!, (c! << 8) | d!)
      } else {
        out.push(Number.parseInt(group, 16))
      }
    }
    return out
  }
  const gap = text.indexOf('::')
  const head = groups(gap === -1 ? text : text.slice(0, gap))
  const tail = gap === -1 ? [] : groups(text.slice(gap + 2))
  const words = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail]
  const bytes = new Uint8Array(16)
  words.forEach((word, i) => {
    bytes[2 * i] = word >> 8
    bytes[2 * i + 1] = word & 0xff
  })
  return bytes
}

/** Whether the first `prefix` bits of `bytes` equal those of `network`. */
export function inPrefix(bytes: Uint8Array, network: Uint8Array, prefix: number): boolean {
  const whole = prefix >> 3
  for (let i = 0; i < whole; i++) if (bytes[i] !== network[i]) return false
  const rest = prefix & 7
  if (rest === 0) return true
  const mask = (0xff << (8 - rest)) & 0xff
  return ((bytes[whole]! ^ network[whole]!) & mask) === 0
}

interface Rule {
  readonly network: Uint8Array
  readonly prefix: number
  readonly category: AddressCategory
}

function rule(cidr: string, category: AddressCategory): Rule {
  const [address, prefix] = cidr.split('/')
  return { network: parseIp(address!)!.bytes, prefix: Number(prefix), category }
}

// First match wins, so single addresses come before the ranges that contain them.
const V4_RULES: readonly Rule[] = [
  rule('169.254.169.254/32', 'metadata'), // AWS, GCP, Azure, OpenStack, Oracle instance metadata
  rule('169.254.170.2/32', 'metadata'), // AWS ECS task credentials
  rule('100.100.100.200/32', 'metadata'), // Alibaba Cloud instance metadata
  rule('168.63.129.16/32', 'metadata'), // Azure WireServer: a public address that only answers inside Azure
  rule('255.255.255.255/32', 'broadcast'),
  // Linux connects 0.0.0.0 to the local host, so "this network" is as dangerous as loopback.
  rule('0.0.0.0/8', 'unspecified'),
  rule('10.0.0.0/8', 'private'),
  rule('100.64.0.0/10', 'shared'),
  rule('127.0.0.0/8', 'loopback'),
  rule('169.254.0.0/16', 'link_local'),
  rule('172.16.0.0/12', 'private'),
  rule('192.0.0.0/24', 'reserved'),
  rule('192.0.2.0/24', 'documentation'),
  rule('192.88.99.0/24', 'reserved'), // deprecated 6to4 relay anycast (RFC 7526)
  rule('192.168.0.0/16', 'private'),
  rule('198.18.0.0/15', 'benchmarking'),
  rule('198.51.100.0/24', 'documentation'),
  rule('203.0.113.0/24', 'documentation'),
  rule('224.0.0.0/4', 'multicast'),
  rule('240.0.0.0/4', 'reserved'),
]

const V6_RULES: readonly Rule[] = [
  rule('fd00:ec2::254/128', 'metadata'), // AWS instance metadata over IPv6
  rule('64:ff9b:1::/48', 'private'), // local-use NAT64 (RFC 8215): translates into private networks
  rule('100::/64', 'reserved'), // discard-only
  rule('2001:db8::/32', 'documentation'),
  rule('2001::/23', 'reserved'), // IETF protocol assignments: Teredo, ORCHID, benchmarking
  rule('3fff::/20', 'documentation'), // RFC 9637
  rule('fc00::/7', 'unique_local'),
  rule('fe80::/10', 'link_local'),
  rule('fec0::/10', 'private'), // deprecated site-local
  rule('ff00::/8', 'multicast'),
]

const MAPPED = rule('::ffff:0:0/96', 'reserved')
const NAT64 = rule('64:ff9b::/96', 'reserved')
const COMPATIBLE = rule('::/96', 'reserved')
const SIX_TO_FOUR = rule('2002::/16', 'reserved')
const GLOBAL_UNICAST = rule('2000::/3', 'reserved')

function classifyV4(bytes: Uint8Array): AddressVerdict {
  for (const r of V4_RULES) if (inPrefix(bytes, r.network, r.prefix)) return refuse(r.category)
  return ALLOWED
}

function classifyV6(bytes: Uint8Array): AddressVerdict {
  // These carry an IPv4 address that is where the packets really end up.
  if (inPrefix(bytes, MAPPED.network, 96) || inPrefix(bytes, NAT64.network, 96)) {
    return classifyV4(bytes.subarray(12))
  }
  if (inPrefix(bytes, SIX_TO_FOUR.network, 16)) return classifyV4(bytes.subarray(2, 6))
  if (inPrefix(bytes, COMPATIBLE.network, 96)) {
    const last = bytes[15]!
    const zeros = bytes[12] === 0 && bytes[13] === 0 && bytes[14] === 0
    if (zeros && last === 0) return refuse('unspecified')
    if (zeros && last === 1) return refuse('loopback')
    // IPv4-compatible addresses are deprecated (RFC 4291 §2.5.5.1): never a legitimate
    // target, but name the IPv4 address's own category when it has one.
    const embedded = classifyV4(bytes.subarray(12))
    return embedded.allowed ? refuse('reserved') : embedded
  }
  for (const r of V6_RULES) if (inPrefix(bytes, r.network, r.prefix)) return refuse(r.category)
  return inPrefix(bytes, GLOBAL_UNICAST.network, 3) ? ALLOWED : refuse('reserved')
}

/**
 * Judge an IP address string (as DNS or `canonicalHost` returns it): allowed only when it is
 * globally routable unicast. A string that is not an IP address is refused as `invalid`.
 */
export function classifyAddress(address: string): AddressVerdict {
  const ip = parseIp(address)
  if (ip === undefined) return refuse('invalid')
  return ip.family === 4 ? classifyV4(ip.bytes) : classifyV6(ip.bytes)
}

/**
 * The client address a `by: ip` limit counts: the TCP peer, or, when the peer is a configured
 * trusted proxy, the first address in X-Forwarded-For (walking from the right, the hop nearest
 * us) that is not itself a trusted proxy. From any other peer the header is ignored: a client
 * could otherwise name a fresh address on every request and never be limited.
 */
import type { IncomingMessage } from 'node:http'
import { parseIp } from '../net/address.ts'
import type { AllowNetworks } from '../net/allow-networks.ts'

// A longer chain is not a real deployment; walking it is work an attacker chooses.
const maxHops = 16

/**
 * The spelling a client is counted under. `::ffff:10.0.0.1` and `10.0.0.1` are one client. An
 * IPv6 client is counted by its /64: one subscriber or host gets a whole /64 and could take a
 * fresh address (and a fresh budget) for every request inside it.
 */
function unmapped(address: string): string {
  if (!address.includes(':')) return address
  if (address.startsWith('::ffff:') && address.includes('.')) return address.slice(7)
  const parsed = parseIp(address)
  if (parsed === undefined || parsed.family !== 6) return address
  const b = parsed.bytes
  const group = (i: number) => ((b[i]! << 8) | b[i + 1]!).toString(16)
  return `${group(0)}:${group(2)}:${group(4)}:${group(6)}::/64`
}

/** The address `req` is counted under; `peer` is the socket's remote address. */
export function clientAddress(
  req: IncomingMessage,
  peer: string,
  trusted: AllowNetworks | undefined,
): string {
  if (trusted === undefined || !trusted.contains(peer)) return unmapped(peer)
  const header = req.headers['x-forwarded-for']
  if (header === undefined) return unmapped(peer)
  const hops = (Array.isArray(header) ? header.join(',') : header).split(',')
  let nearest = peer
  for (let i = hops.length - 1, walked = 0; i >= 0 && walked < maxHops; i--, walked++) {
    const hop = hops[i]!.trim()
    // A hop that is not an address was not written by a proxy we trust: stop at the last good one.
    if (parseIp(hop) === undefined) break
    if (!trusted.contains(hop)) return unmapped(hop)
    nearest = hop
  }
  return unmapped(nearest)
}

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

/** `::ffff:10.0.0.1` and `10.0.0.1` are one client: count them under one spelling. */
function unmapped(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address
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

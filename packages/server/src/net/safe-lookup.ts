/**
 * A DNS lookup for outbound connections that refuses disallowed addresses (DESIGN §6, SSRF).
 * It resolves once, checks every address of the answer, and hands the socket exactly the
 * addresses it checked: there is no second resolution an attacker's DNS could answer
 * differently (DNS rebinding). Plug it into `net.connect({ lookup })` or undici's
 * `connect: { lookup }`.
 */
import { lookup as dnsLookup } from 'node:dns/promises'
import { isIP, type LookupFunction } from 'node:net'
import { type AddressCategory, classifyAddress } from './address.ts'
import type { AllowNetworks } from './allow-networks.ts'
import { NetFetchError } from './fetch-error.ts'

/** One address of a DNS answer. */
export interface ResolvedAddress {
  readonly address: string
  readonly family: number
}

/** Resolves a host name to all its addresses; injectable so tests control DNS. */
export type Resolver = (host: string) => Promise<readonly ResolvedAddress[]>

/** What the SSRF check needs: the networks opened explicitly, and how to resolve names. */
export interface SafeLookupOptions {
  readonly allowNetworks: AllowNetworks
  readonly resolve?: Resolver
}

/** The operating system's resolver (getaddrinfo: /etc/hosts, then DNS), every address. */
const systemResolver: Resolver = (host) => dnsLookup(host, { all: true })

const LABELS: Record<AddressCategory, string> = {
  loopback: 'a loopback address',
  private: 'a private address',
  link_local: 'a link-local address',
  unique_local: 'a unique local address',
  multicast: 'a multicast address',
  unspecified: 'an unspecified address',
  broadcast: 'the broadcast address',
  reserved: 'a reserved address',
  shared: 'a shared (carrier-grade NAT) address',
  metadata: 'a cloud metadata address',
  documentation: 'a documentation address',
  benchmarking: 'a benchmarking address',
  invalid: 'something that is not an IP address',
}

/**
 * Throw `ssrf_blocked` unless `address` is in an allowed network or is globally routable.
 * `host` is what the caller asked for, named in the message (the address itself is not: it
 * would tell an agent how internal names resolve).
 */
export function checkAddress(host: string, address: string, allowNetworks: AllowNetworks): void {
  if (allowNetworks.contains(address)) return
  const verdict = classifyAddress(address)
  if (verdict.allowed) return
  const how = isIP(host) === 0 ? 'resolves to' : 'is'
  throw new NetFetchError(
    'ssrf_blocked',
    `Refused to connect to ${host}: it ${how} ${LABELS[verdict.category]}, which is not allowed.`,
    { category: verdict.category, host },
  )
}

/**
 * The addresses `host` may be reached at, every one of them checked. An IP literal is checked
 * as it is, without DNS. Throws `ssrf_blocked` if ANY address is refused (a mixed answer is how
 * a rebinding attack hides its private address) and `connect_failed` if the name does not resolve.
 */
export async function resolveChecked(host: string, options: SafeLookupOptions): Promise<ResolvedAddress[]> {
  const family = isIP(host)
  if (family !== 0) {
    checkAddress(host, host, options.allowNetworks)
    return [{ address: host, family }]
  }
  let answer: readonly ResolvedAddress[]
  try {
    answer = await (options.resolve ?? systemResolver)(host)
  } catch (err) {
    const code = (err as { code?: unknown } | null)?.code
    throw new NetFetchError(
      'connect_failed',
      `Could not resolve ${host}${typeof code === 'string' ? ` (${code})` : ''}.`,
      { host, cause: err },
    )
  }
  if (answer.length === 0) {
    throw new NetFetchError('connect_failed', `Could not resolve ${host}: no addresses.`, { host })
  }
  // The family comes from the address itself, not from the resolver's claim about it.
  return answer.map(({ address }) => {
    checkAddress(host, address, options.allowNetworks)
    return { address, family: isIP(address) }
  })
}

/**
 * A `lookup` for `net.connect`/`tls.connect` (and so undici's `connect` option) that only ever
 * yields checked addresses. Honours `options.family` and `options.all` as dns.lookup does:
 * Node asks for every address when it races IPv4 and IPv6 (autoSelectFamily).
 */
export function createSafeLookup(options: SafeLookupOptions): LookupFunction {
  return (hostname, lookupOptions, callback) => {
    resolveChecked(hostname, options).then(
      (checked) => {
        const wanted = lookupOptions.family
        const usable =
          wanted === 4 || wanted === 6 || wanted === 'IPv4' || wanted === 'IPv6'
            ? checked.filter((a) => a.family === (wanted === 4 || wanted === 'IPv4' ? 4 : 6))
            : checked
        const first = usable[0]
        if (first === undefined) {
          const err = new NetFetchError(
            'connect_failed',
            `Could not resolve ${hostname}: no IPv${wanted === 4 || wanted === 'IPv4' ? 4 : 6} address.`,
            { host: hostname },
          )
          callback(err, '')
          return
        }
        if (lookupOptions.all === true) callback(null, usable)
        else callback(null, first.address, first.family)
      },
      (err: unknown) => callback(err as Error, ''),
    )
  }
}

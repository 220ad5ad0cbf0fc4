/**
 * `domains` guards for `http_fetch` (DESIGN §7). A pattern is an exact host (`api.example.com`,
 * an IP literal) or `*.example.com`, which matches every subdomain at any depth
 * (`a.example.com`, `a.b.example.com`) but NOT `example.com` itself: list both to allow both.
 * Patterns and hosts are compared in their canonical spelling (net/host.ts: lower case, IDN as
 * punycode, no trailing dot, IPv4 in dotted decimal). A deny match wins; an allow list, when
 * present, must match (an empty one allows nothing).
 */
import { canonicalHost, hostOfUrl } from '../../net/host.ts'

/** The outcome of a host check. */
export type DomainCheck = { ok: true } | { ok: false; reason: 'domain_denied' | 'domain_not_allowed' }

/** A refused pattern: where (`allow[2]`) and why. */
export interface DomainProblem {
  readonly path: string
  readonly reason: string
}

/** The lists as written in a policy. */
export interface DomainGuardSpec {
  readonly allow?: readonly string[]
  readonly deny?: readonly string[]
}

/** A compiled guard; `check` canonicalises the host itself. */
export interface DomainGuard {
  readonly ok: true
  check(host: string): DomainCheck
}

interface PatternSet {
  readonly exact: Set<string>
  /** `*.example.com` is stored as `example.com`. */
  readonly suffixes: Set<string>
}

const allowed: DomainCheck = Object.freeze({ ok: true })
const denied: DomainCheck = Object.freeze({ ok: false, reason: 'domain_denied' })
const notAllowed: DomainCheck = Object.freeze({ ok: false, reason: 'domain_not_allowed' })
const ipv4 = /^\d+\.\d+\.\d+\.\d+$/

function isIp(host: string): boolean {
  return host.includes(':') || ipv4.test(host)
}

function compileList(
  list: readonly string[] | undefined,
  key: string,
  problems: DomainProblem[],
): PatternSet | undefined {
  if (list === undefined) return undefined
  const set: PatternSet = { exact: new Set(), suffixes: new Set() }
  if (!Array.isArray(list)) {
    problems.push({ path: key, reason: 'expected a list of host patterns' })
    return set
  }
  list.forEach((pattern, i) => {
    const path = `${key}[${i}]`
    if (typeof pattern !== 'string' || pattern === '') {
      problems.push({ path, reason: 'expected a host name or *.domain' })
      return
    }
    const wildcard = pattern.startsWith('*.')
    const rest = wildcard ? pattern.slice(2) : pattern
    if (rest.includes('*')) {
      problems.push({ path, reason: `${quote(pattern)}: only a leading "*." wildcard is supported` })
      return
    }
    const host = canonicalHost(rest)
    if (host === undefined) {
      problems.push({ path, reason: `${quote(pattern)} is not a valid host name` })
      return
    }
    if (wildcard && isIp(host)) {
      problems.push({ path, reason: `${quote(pattern)}: wildcards apply to domain names, not IP addresses` })
      return
    }
    if (wildcard) set.suffixes.add(host)
    else set.exact.add(host)
  })
  return set
}

function matches(set: PatternSet, host: string): boolean {
  if (set.exact.has(host)) return true
  if (set.suffixes.size === 0 || isIp(host)) return false
  // Try each proper parent domain: a.b.example.com → b.example.com → example.com → com.
  let dot = host.indexOf('.')
  while (dot >= 0) {
    if (set.suffixes.has(host.slice(dot + 1))) return true
    dot = host.indexOf('.', dot + 1)
  }
  return false
}

/** Compile allow/deny lists; problems name each refused pattern. */
export function compileDomainGuard(
  spec: DomainGuardSpec,
): DomainGuard | { ok: false; problems: DomainProblem[] } {
  const problems: DomainProblem[] = []
  const allow = compileList(spec.allow, 'allow', problems)
  const deny = compileList(spec.deny, 'deny', problems)
  if (problems.length > 0) return { ok: false, problems }
  return {
    ok: true,
    check(host) {
      const canonical = typeof host === 'string' ? canonicalHost(host) : undefined
      // A host with no canonical form cannot be judged, so it is refused.
      if (canonical === undefined) return notAllowed
      if (deny !== undefined && matches(deny, canonical)) return denied
      if (allow !== undefined && !matches(allow, canonical)) return notAllowed
      return allowed
    },
  }
}

/** The canonical host of an http(s) URL (userinfo ignored), or undefined for anything else. */
export function hostFromUrl(url: string): string | undefined {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return undefined
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return undefined
  return hostOfUrl(parsed)
}

function quote(text: string): string {
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}…` : text)
}

/**
 * Detectors for response filters (DESIGN §7): each finds one kind of sensitive text, which the
 * filter replaces in place by `[REDACTED:kind]`.
 *
 * Built-ins, written so that one scan costs time linear in the text (every run starts only at a
 * token boundary, and repeats are bounded or cannot overlap):
 * - `email`: local part up to 64 characters, a dotted domain with a letter TLD.
 * - `card`: 13–19 digits, optionally grouped by single spaces or dashes, passing the Luhn check
 *   (inside a longer run of groups, the groups that form one: `4111 1111 1111 1111 12/25`).
 * - `phone`: international `+CC …` (8–15 digits in all, E.164), North American `(415) 555-2671` /
 *   `415-555-2671`, and national numbers with a leading 0 written in groups (`020 7946 0958`,
 *   `06 12 34 56 78`, 9–11 digits). Bare digit runs, dates and IP addresses are left alone.
 * - `api_key`: OpenAI/Anthropic `sk-…` (`sk-proj-…`), AWS `AKIA…`/`ASIA…`, GitHub
 *   `ghp_/gho_/ghu_/ghs_/ghr_…` and `github_pat_…`, Slack `xox[abprs]-…`, Google `AIza…`, Stripe
 *   `sk_live_/rk_live_/sk_test_/rk_test_…`, and the value of an `api_key=`/`apikey=`/
 *   `access_token=` URL parameter. A bare 64-hex key (SerpAPI) is NOT a built-in: it cannot be
 *   told from a SHA-256 digest; add a custom detector where such keys can appear.
 * - `jwt`: three (or five, JWE) base64url parts, the header starting `eyJ`.
 *
 * Custom detectors are JavaScript regular expressions (unicode mode) that pass the regex screen.
 * They scan long strings in 1,024-character windows overlapping by 128, which bounds the cost of
 * a backtracking pattern (`\d+x` over a megabyte of digits: about a second, not hours); a custom
 * match longer than the overlap may be missed where it straddles two windows.
 */
import { regexSafetyProblem } from './regex-safety.ts'

/** A compiled detector. */
export interface Detector {
  readonly name: string
  /** Global regex; scans reset `lastIndex`, so sharing one between filters is safe. */
  readonly regex: RegExp
  /**
   * Judges a candidate match (Luhn, digit counts): the text to put in its place and how many
   * redactions that holds. Without it, every match is one redaction.
   */
  readonly redactMatch?: (match: string, marker: string) => [text: string, found: number]
  /** A cheap pre-test: false means the text cannot hold a match. */
  readonly mayMatch?: (text: string) => boolean
  /** Custom detectors scan in windows. */
  readonly windowed: boolean
}

/** The built-in detector names. */
export const builtinDetectorNames = ['email', 'card', 'phone', 'api_key', 'jwt'] as const

/** Window length and overlap for custom detectors' scans. */
export const customWindow = 1024
export const customOverlap = 128

const detectorName = /^[a-z][a-z0-9_]{0,31}$/
const b64 = '[A-Za-z0-9_-]'
const urlKeyParams = 'api_key|apikey|api-key|access_token'

/** The Luhn check over the digits of `groups[from..to]` (ISO/IEC 7812-1 Annex B). */
function luhn(groups: readonly string[], from: number, to: number): boolean {
  let sum = 0
  let double = false
  for (let g = to; g >= from; g--) {
    const group = groups[g]!
    for (let i = group.length - 1; i >= 0; i--) {
      let d = group.charCodeAt(i) - 48
      if (double) {
        d *= 2
        if (d > 9) d -= 9
      }
      sum += d
      double = !double
    }
  }
  return sum % 10 === 0
}

/**
 * Cards inside a run of digit groups: every span of whole groups holding 13-19 digits that
 * passes Luhn is covered, and overlapping spans become one marker. Covering the
 * union over-redacts a neighbouring group now and then (one span in ten passes Luhn by chance)
 * rather than leave part of a card visible (`4111 1111 1111 1111 12/25` keeps its expiry). An
 * ungrouped run longer than 19 digits is some other number.
 */
function redactCards(run: string, marker: string): [string, number] {
  const groups = run.split(/[ -]/)
  // Covered stretches as [first, last] group pairs, overlapping spans merged; spans are found in
  // order of their first group.
  const stretches: number[] = []
  for (let g = 0; g < groups.length; g++) {
    let digits = 0
    for (let j = g; j < groups.length && digits + groups[j]!.length <= 19; j++) {
      digits += groups[j]!.length
      if (digits < 13 || !luhn(groups, g, j)) continue
      const n = stretches.length
      if (n > 0 && g <= stretches[n - 1]!) stretches[n - 1] = Math.max(stretches[n - 1]!, j)
      else stretches.push(g, j)
    }
  }
  if (stretches.length === 0) return [run, 0]
  const separators = run.match(/[ -]/g) ?? []
  let out = ''
  let next = 0
  for (let k = 0; k < stretches.length; k += 2) {
    for (let g = next; g < stretches[k]!; g++) out += groups[g]! + separators[g]!
    out += marker
    next = stretches[k + 1]! + 1
    if (next < groups.length) out += separators[next - 1]!
  }
  for (let g = next; g < groups.length; g++) out += groups[g]! + (separators[g] ?? '')
  return [out, stretches.length / 2]
}

function countDigits(text: string): number {
  let n = 0
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i)
    if (code >= 48 && code <= 57) n++
  }
  return n
}

function redactPhone(match: string, marker: string): [string, number] {
  const n = countDigits(match)
  const plausible = match.startsWith('+')
    ? n >= 8 && n <= 15
    : match.startsWith('0')
      ? n >= 9 && n <= 11
      : n === 10
  return plausible ? [marker, 1] : [match, 0]
}

const hasDigit = /\d/

// Order matters: a JWT or key can hold digit runs and `@`-free text that later detectors would
// split, and cards go before phones so a grouped card number is not half-redacted as a phone.
const builtins: ReadonlyMap<string, Detector> = new Map<string, Detector>([
  [
    'jwt',
    {
      name: 'jwt',
      regex: new RegExp(`(?<!${b64})eyJ${b64}+\\.${b64}+\\.${b64}*(?:\\.${b64}+\\.${b64}+)?(?!${b64})`, 'g'),
      mayMatch: (text) => text.includes('eyJ'),
      windowed: false,
    },
  ],
  [
    'api_key',
    {
      name: 'api_key',
      // Each branch starts with its literal prefix and looks behind only after it: a leading
      // lookbehind is tried at every position and made this scan 25 times slower.
      regex: new RegExp(
        [
          `sk-(?<![\\w-]sk-)${b64}{20,}`,
          '(?:AKIA|ASIA)(?<![A-Za-z0-9]....)[A-Z0-9]{16}(?![A-Za-z0-9])',
          'gh[pousr]_(?<![A-Za-z0-9_]gh[pousr]_)[A-Za-z0-9]{36,}',
          'github_pat_(?<![A-Za-z0-9_]github_pat_)[A-Za-z0-9_]{22,}',
          'xox[abprs]-(?<![A-Za-z0-9_-]xox[abprs]-)[A-Za-z0-9-]{10,}',
          `AIza(?<![A-Za-z0-9_-]AIza)${b64}{35}(?!${b64})`,
          '[sr]k_(?:live|test)_(?<![A-Za-z0-9_][sr]k_(?:live|test)_)[A-Za-z0-9]{16,}',
          `(?:${urlKeyParams})=(?<=[?&](?:${urlKeyParams})=)[A-Za-z0-9._~%-]{16,}`,
        ].join('|'),
        'g',
      ),
      // A URL parameter keeps its name: `api_key=[REDACTED:api_key]`.
      redactMatch: (match, marker) => {
        const eq = match.indexOf('=')
        return [eq < 0 ? marker : match.slice(0, eq + 1) + marker, 1]
      },
      windowed: false,
    },
  ],
  [
    'email',
    {
      name: 'email',
      regex:
        /(?<![\w.%+-])[\w.%+-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}(?![\w-])/g,
      mayMatch: (text) => text.includes('@'),
      windowed: false,
    },
  ],
  [
    'card',
    {
      name: 'card',
      // A whole run of digits, single spaces and dashes, found once from its first digit.
      regex: /(?<![\d+]|[\d+][ -])\d(?:[ -]?\d){12,}/g,
      redactMatch: redactCards,
      mayMatch: (text) => hasDigit.test(text),
      windowed: false,
    },
  ],
  [
    'phone',
    {
      name: 'phone',
      regex: new RegExp(
        [
          // +14155552671, and +CC with an optional (area) and groups each after a separator, so
          // that a run of digits can be split into groups one way only.
          '(?<![\\w+])\\+[1-9]\\d{7,14}(?![\\w-]|[.]\\d)',
          '(?<![\\w+])\\+[1-9]\\d{0,3}(?:[ .-]?\\(\\d{1,4}\\))?(?:[ .-]\\d{1,8}){1,6}(?![\\w-]|[.]\\d)',
          // (415) 555-2671, 415-555-2671, 415.555.2671
          '(?<![\\w+(.-])(?:\\(\\d{3}\\) ?|\\d{3}[ .-])\\d{3}[ .-]\\d{4}(?![\\w-]|[.]\\d)',
          // 020 7946 0958, 06 12 34 56 78, 030-123-4567
          '(?<![\\w+.-])0\\d{1,4}(?:[ .-]\\d{2,4}){2,4}(?![\\w-]|[.]\\d)',
        ].join('|'),
        'g',
      ),
      redactMatch: redactPhone,
      mayMatch: (text) => hasDigit.test(text),
      windowed: false,
    },
  ],
])

/** The built-in detector named `name`, if any. */
export function builtinDetector(name: string): Detector | undefined {
  return builtins.get(name)
}

/** Built-in detectors in scan order, keeping those in `names`. */
export function builtinsInOrder(names: ReadonlySet<string>): Detector[] {
  return [...builtins.values()].filter((detector) => names.has(detector.name))
}

/** A refused custom detector: its key (`patterns.my_id`) and why. */
export interface DetectorProblem {
  readonly path: string
  readonly reason: string
}

/** Compile `{name: regexSource}` custom detectors; names must not clash with built-ins or `path`. */
export function compileCustomDetectors(
  patterns: Readonly<Record<string, string>>,
): { ok: true; detectors: Detector[] } | { ok: false; problems: DetectorProblem[] } {
  const problems: DetectorProblem[] = []
  const detectors: Detector[] = []
  if (typeof patterns !== 'object' || patterns === null || Array.isArray(patterns)) {
    return { ok: false, problems: [{ path: 'patterns', reason: 'expected a map of detector name to regex' }] }
  }
  for (const [name, source] of Object.entries(patterns)) {
    const path = `patterns.${name}`
    if (!detectorName.test(name)) {
      problems.push({ path, reason: 'detector names are 1-32 of a-z, 0-9 and _, starting with a letter' })
      continue
    }
    if (builtins.has(name) || name === 'path') {
      problems.push({ path, reason: `"${name}" is a built-in kind; choose another name` })
      continue
    }
    if (typeof source !== 'string' || source === '') {
      problems.push({ path, reason: 'expected a non-empty regular expression' })
      continue
    }
    const unsafe = regexSafetyProblem(source)
    if (unsafe !== undefined) {
      problems.push({ path, reason: unsafe })
      continue
    }
    let regex: RegExp
    try {
      regex = new RegExp(source, 'gu')
    } catch (err) {
      problems.push({ path, reason: (err as Error).message })
      continue
    }
    if (new RegExp(source, 'u').test('')) {
      problems.push({ path, reason: 'the pattern matches the empty string' })
      continue
    }
    detectors.push({ name, regex, windowed: true })
  }
  return problems.length > 0 ? { ok: false, problems } : { ok: true, detectors }
}

/**
 * Replace what `detectors` find in `text` by `[REDACTED:name]`, in order, adding to `counts`.
 * Returns `text` itself when nothing was found.
 */
export function redactText(
  text: string,
  detectors: readonly Detector[],
  counts: Record<string, number>,
): string {
  let result = text
  for (const detector of detectors) {
    if (detector.mayMatch !== undefined && !detector.mayMatch(result)) continue
    result = detector.windowed
      ? replaceWindowed(result, detector, counts)
      : replaceAll(result, detector, counts)
  }
  return result
}

function bump(counts: Record<string, number>, name: string, by: number): void {
  if (by > 0) counts[name] = (Object.hasOwn(counts, name) ? counts[name]! : 0) + by
}

function replaceAll(text: string, detector: Detector, counts: Record<string, number>): string {
  const { redactMatch, name, regex } = detector
  // Most strings hold nothing: a test is several times cheaper than a replace that finds nothing.
  regex.lastIndex = 0
  if (!regex.test(text)) return text
  const marker = `[REDACTED:${name}]`
  let found = 0
  const result = text.replace(regex, (match) => {
    if (redactMatch === undefined) {
      found++
      return marker
    }
    const [replacement, n] = redactMatch(match, marker)
    found += n
    return replacement
  })
  bump(counts, name, found)
  return found > 0 ? result : text
}

function replaceWindowed(text: string, detector: Detector, counts: Record<string, number>): string {
  if (text.length <= customWindow) return replaceAll(text, detector, counts)
  const { regex, name } = detector
  // Matches as [start, end) pairs over the whole text, in order and not overlapping.
  const ranges: number[] = []
  let covered = 0
  for (let start = 0; start < text.length; start += customWindow - customOverlap) {
    const window = text.slice(start, start + customWindow)
    regex.lastIndex = 0
    for (let m = regex.exec(window); m !== null; m = regex.exec(window)) {
      if (m[0] === '') {
        regex.lastIndex++
        continue
      }
      const from = start + m.index
      const to = from + m[0].length
      // The overlap is scanned twice: a span found again is skipped, and a match the previous
      // window cut short is extended to where this one ends.
      if (from >= covered) {
        ranges.push(from, to)
        covered = to
      } else if (to > covered) {
        const n = ranges.length
        ranges[n - 2] = Math.max(ranges[n - 3] ?? 0, Math.min(ranges[n - 2]!, from))
        ranges[n - 1] = to
        covered = to
      }
    }
    if (start + customWindow >= text.length) break
  }
  if (ranges.length === 0) return text
  const marker = `[REDACTED:${name}]`
  let out = ''
  let last = 0
  for (let i = 0; i < ranges.length; i += 2) {
    out += text.slice(last, ranges[i]) + marker
    last = ranges[i + 1]!
  }
  bump(counts, name, ranges.length / 2)
  return out + text.slice(last)
}

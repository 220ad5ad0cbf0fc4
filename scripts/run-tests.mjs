#!/usr/bin/env node
// Finds every *.test.ts under packages/ and test/ and runs them with node:test through tsx.
// Node 20's --test does not expand globs itself, so the list is built here.
import { spawnSync } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'

const roots = ['packages', 'test', 'bench', 'examples']
const skipDirs = new Set(['node_modules', 'dist', '.git'])

function collect(dir, out) {
  let entries
  try {
    entries = readdirSync(dir, { withFileTypes: true })
  } catch {
    return out
  }
  for (const entry of entries) {
    if (skipDirs.has(entry.name)) continue
    const path = join(dir, entry.name)
    if (entry.isDirectory()) collect(path, out)
    else if (entry.name.endsWith('.test.ts')) out.push(path)
  }
  return out
}

const filter = process.argv.slice(2)
const files = roots
  .flatMap((root) => collect(root, []))
  .filter((f) => filter.length === 0 || filter.some((part) => f.includes(part)))
  .sort()
if (files.length === 0) {
  console.error('no test files found')
  process.exit(1)
}
const result = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-concurrency=2', '--test-timeout=300000', ...files],
  { stdio: 'inherit' },
)
process.exit(result.status ?? 1)

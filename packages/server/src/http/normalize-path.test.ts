import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { normalizePath } from './normalize-path.ts'

function ok(input: string): string {
  const result = normalizePath(input)
  assert.ok(result.ok, `expected ${input} to normalise, got ${JSON.stringify(result)}`)
  return result.path
}

function refused(input: string): string {
  const result = normalizePath(input)
  assert.equal(result.ok, false, `expected ${input} to be refused`)
  return result.ok ? '' : result.reason
}

describe('normalizePath', () => {
  it('returns an ordinary path unchanged', () => {
    assert.equal(ok('/orders/42'), '/orders/42')
    assert.equal(ok('/'), '/')
    assert.equal(ok('/a/b/'), '/a/b/')
  })

  it('resolves dot segments and never climbs above the root', () => {
    assert.equal(ok('/public/../admin/x'), '/admin/x')
    assert.equal(ok('/a/./b'), '/a/b')
    assert.equal(ok('/../../etc/passwd'), '/etc/passwd')
    assert.equal(ok('/a/b/..'), '/a/')
    assert.equal(ok('/a/.'), '/a/')
  })

  it('decodes encoded dots before resolving dot segments', () => {
    assert.equal(ok('/public/%2e%2e/admin'), '/admin')
    assert.equal(ok('/public/%2E%2e/admin'), '/admin')
    assert.equal(ok('/public/.%2e/admin'), '/admin')
    assert.equal(ok('/public/%2e/admin'), '/public/admin')
  })

  it('collapses repeated slashes', () => {
    assert.equal(ok('//admin//x'), '/admin/x')
    assert.equal(ok('/public//..//admin'), '/admin')
  })

  it('decodes unreserved escapes and upper-cases the others', () => {
    assert.equal(ok('/%61dmin/%7euser'), '/admin/~user')
    assert.equal(ok('/q/a%20b%3f'), '/q/a%20b%3F')
    assert.equal(ok('/double/%252e%252e/x'), '/double/%252e%252e/x')
  })

  it('refuses an encoded slash or backslash', () => {
    assert.match(refused('/public/..%2fadmin'), /encoded slash/)
    assert.match(refused('/public/..%2Fadmin'), /encoded slash/)
    assert.match(refused('/public/..%5cadmin'), /encoded slash or backslash/)
  })

  it('refuses a raw backslash', () => assert.match(refused('/public\\..\\admin'), /backslash/))

  it('refuses malformed escapes and encoded control bytes', () => {
    assert.match(refused('/a%zz'), /malformed/)
    assert.match(refused('/a%2'), /malformed/)
    assert.match(refused('/a%00b'), /control/)
    assert.match(refused('/a%0d%0aSet-Cookie'), /control/)
  })

  it('refuses dot segments that carry parameters', () => {
    assert.match(refused('/public/..;/admin'), /parameters/)
    assert.match(refused('/public/.;x/admin'), /parameters/)
  })

  it('keeps semicolons inside ordinary segments', () => assert.equal(ok('/m;v=1/x'), '/m;v=1/x'))

  it('refuses a target that is not an absolute path', () => {
    refused('*')
    refused('admin')
  })
})

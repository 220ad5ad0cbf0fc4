import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { compileTemplate } from './header-template.ts'

describe('header templates', () => {
  const lookup = (name: string) => ({ sub: 'agent-1', channel: 'orders', evil: 'a\r\nx: y' })[name]

  it('renders a literal value without a lookup', () => {
    const t = compileTemplate('static-value')
    assert.equal(t.literal, 'static-value')
    assert.equal(
      t.render(() => assert.fail('no lookup for a literal')),
      'static-value',
    )
  })
  it('fills placeholders from the request values', () => {
    assert.equal(compileTemplate('{{sub}}@{{ channel }}').render(lookup), 'agent-1@orders')
  })
  it('leaves the header out when a placeholder has no value', () => {
    assert.equal(compileTemplate('id={{missing}}').render(lookup), undefined)
  })
  it('leaves the header out rather than send a value containing CR or LF', () => {
    assert.equal(compileTemplate('{{evil}}').render(lookup), undefined)
  })
  it('refuses an unclosed or malformed placeholder', () => {
    assert.throws(() => compileTemplate('{{sub'), /malformed placeholder/)
    assert.throws(() => compileTemplate('{{ not valid }}'), /malformed placeholder/)
  })
})

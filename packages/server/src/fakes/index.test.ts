import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { request } from 'undici'
import { startFakeUpstreams } from './index.ts'

const credentials = { serpapi: 'serp-key-1', openai: 'sk-key-2', gmail: 'ya29.token-3' }

describe('startFakeUpstreams', () => {
  it('starts the three fakes on their own ports, each expecting its own credential', async () => {
    const fakes = await startFakeUpstreams({ credentials })
    try {
      const urls = [fakes.serpapi.url, fakes.openai.url, fakes.gmail.url]
      assert.equal(new Set(urls).size, 3)
      const serp = await request(`${fakes.serpapi.url}/search.json?q=x&api_key=${credentials.serpapi}`)
      assert.equal(serp.statusCode, 200)
      await serp.body.dump()
      const models = await request(`${fakes.openai.url}/v1/models`, {
        headers: { authorization: `Bearer ${credentials.openai}` },
      })
      assert.equal(models.statusCode, 200)
      await models.body.dump()
      const profile = await request(`${fakes.gmail.url}/gmail/v1/users/me/profile`, {
        headers: { authorization: `Bearer ${credentials.gmail}` },
      })
      assert.equal(profile.statusCode, 200)
      await profile.body.dump()
      // Another fake's credential is refused: proof that each checks its own.
      const crossed = await request(`${fakes.gmail.url}/gmail/v1/users/me/profile`, {
        headers: { authorization: `Bearer ${credentials.openai}` },
      })
      assert.equal(crossed.statusCode, 401)
      await crossed.body.dump()
    } finally {
      await fakes.close()
    }
    await assert.rejects(request(`${fakes.openai.url}/v1/models`))
  })

  it('rejects with the bind error when the host is not an address of this machine', async () => {
    await assert.rejects(startFakeUpstreams({ credentials, host: '192.0.2.1' }), /EADDRNOTAVAIL/)
  })
})

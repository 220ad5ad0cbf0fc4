import assert from 'node:assert/strict'
import { once } from 'node:events'
import { type AddressInfo, connect, createServer, type Socket } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { abortFromSignal, ClientGone } from './call-abort.ts'

describe('ClientGone', () => {
  const accepted: Socket[] = []
  const server = createServer((socket) => accepted.push(socket))
  let port = 0
  before(async () => {
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    port = (server.address() as AddressInfo).port
  })
  after(() => server.close())

  async function socketPair(): Promise<Socket> {
    const client = connect(port, '127.0.0.1')
    await once(client, 'connect')
    while (accepted.length === 0) await new Promise((r) => setImmediate(r))
    return accepted.shift()!
  }

  it('runs its listeners and aborts its signal when the socket closes', async () => {
    const socket = await socketPair()
    const gone = new ClientGone(socket)
    let ran = 0
    gone.onAbort(() => ran++)
    const signal = gone.signal
    assert.equal(gone.aborted, false)
    socket.destroy()
    await once(socket, 'close')
    assert.equal(gone.aborted, true)
    assert.equal(ran, 1)
    assert.equal(signal.aborted, true)
  })

  it('is aborted from the start on a socket already destroyed, and runs a late listener at once', async () => {
    const socket = await socketPair()
    socket.destroy()
    await once(socket, 'close')
    const gone = new ClientGone(socket)
    let ran = 0
    gone.onAbort(() => ran++)
    assert.equal(gone.aborted, true)
    assert.equal(ran, 1)
    assert.equal(gone.signal.aborted, true)
  })

  it('forgets an unsubscribed listener, and a disposed instance ignores the close', async () => {
    const socket = await socketPair()
    const gone = new ClientGone(socket)
    let ran = 0
    const stop = gone.onAbort(() => ran++)
    stop()
    const dispose = gone.dispose
    dispose()
    assert.equal(socket.listenerCount('close'), 0)
    socket.destroy()
    await once(socket, 'close')
    assert.equal(ran, 0)
    assert.equal(gone.aborted, false)
  })
})

describe('abortFromSignal', () => {
  it('follows the signal it wraps', () => {
    const controller = new AbortController()
    const abort = abortFromSignal(controller.signal)
    let ran = 0
    abort.onAbort(() => ran++)
    const stop = abort.onAbort(() => (ran += 10))
    stop()
    controller.abort()
    assert.equal(abort.aborted, true)
    assert.equal(ran, 1)
    assert.equal(abort.signal, controller.signal)
  })
})

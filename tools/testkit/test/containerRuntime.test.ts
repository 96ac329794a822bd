import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import {
  findContainerRuntime,
  pingRuntime,
  runtimeEndpoints,
} from '../src/internal/containerRuntime.js'
import { closedPort, tcpServer } from './helpers.js'

const cleanups: Array<() => void | Promise<void>> = []
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!()
})

/** A fake Docker API on a unix socket that answers every request with `status`. */
async function fakeDockerSocket(status: string, name = 'docker.sock') {
  const dir = mkdtempSync(join(tmpdir(), 'testkit-docker-'))
  const path = join(dir, name)
  mkdirSync(dirname(path), { recursive: true })
  const server: Server = createServer((socket) => {
    socket.once('data', () => socket.end(`HTTP/1.1 ${status}\r\nContent-Length: 2\r\n\r\nOK`))
  })
  await new Promise<void>((resolve) => server.listen(path, resolve))
  cleanups.push(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()))
    rmSync(dir, { recursive: true, force: true })
  })
  return { path, dir }
}

describe('container runtime probe', () => {
  it('answers yes for a Docker API that returns 200 to /_ping', async () => {
    const { path } = await fakeDockerSocket('200 OK')
    expect(await pingRuntime(`unix://${path}`, 1000)).toBe(true)
    expect(await findContainerRuntime({ DOCKER_HOST: `unix://${path}` })).toEqual({
      dockerHost: `unix://${path}`,
      autodetected: true,
    })
  })

  it('answers no for an error status, a dead socket, a mute server or a closed port', async () => {
    const { path } = await fakeDockerSocket('500 Internal Server Error')
    expect(await pingRuntime(`unix://${path}`, 1000)).toBe(false)
    expect(await pingRuntime('unix:///nonexistent/docker.sock', 1000)).toBe(false)
    expect(await pingRuntime(`tcp://127.0.0.1:${await closedPort()}`, 1000)).toBe(false)
    const mute = await tcpServer(() => {})
    cleanups.push(() => mute.close())
    const started = Date.now()
    expect(await pingRuntime(`tcp://127.0.0.1:${mute.port}`, 200)).toBe(false)
    expect(Date.now() - started).toBeLessThan(1000)
  })

  it('can be turned off with BALLAST_TESTCONTAINERS=0', async () => {
    const { path } = await fakeDockerSocket('200 OK')
    expect(
      await findContainerRuntime({ DOCKER_HOST: `unix://${path}`, BALLAST_TESTCONTAINERS: '0' }),
    ).toBe(undefined)
  })

  it('finds a rootless docker socket under XDG_RUNTIME_DIR', async () => {
    const docker = await fakeDockerSocket('200 OK')
    expect(runtimeEndpoints({ XDG_RUNTIME_DIR: docker.dir, HOME: '/nonexistent' })).toContainEqual({
      dockerHost: `unix://${docker.path}`,
      autodetected: true,
    })
  })

  it('finds a podman socket and marks it as needing DOCKER_HOST for testcontainers', async () => {
    const podman = await fakeDockerSocket('200 OK', 'podman/podman.sock')
    expect(runtimeEndpoints({ XDG_RUNTIME_DIR: podman.dir, HOME: '/nonexistent' })).toContainEqual({
      dockerHost: `unix://${podman.path}`,
      autodetected: false,
    })
  })

  it('looks no further than DOCKER_HOST when it is set', () => {
    expect(runtimeEndpoints({ DOCKER_HOST: 'tcp://10.0.0.1:2375', XDG_RUNTIME_DIR: '/x' })).toEqual(
      [{ dockerHost: 'tcp://10.0.0.1:2375', autodetected: true }],
    )
  })
})

import { statSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { homedir } from 'node:os'
import { join } from 'node:path'

/** A place a Docker-compatible API may listen. */
export interface RuntimeEndpoint {
  /** `unix:///path` or `tcp://host:port`, as DOCKER_HOST spells it. */
  dockerHost: string
  /** Whether testcontainers finds it without DOCKER_HOST (false for podman sockets). */
  autodetected: boolean
}

function isSocket(path: string): boolean {
  try {
    return statSync(path).isSocket()
  } catch {
    return false
  }
}

/** The endpoints worth probing, cheapest information first; none of this touches the network. */
export function runtimeEndpoints(
  env: Readonly<Record<string, string | undefined>>,
): RuntimeEndpoint[] {
  const endpoints: RuntimeEndpoint[] = []
  const dockerHost = env.DOCKER_HOST?.trim()
  if (dockerHost) {
    endpoints.push({ dockerHost, autodetected: true })
    return endpoints
  }
  const home = env.HOME ?? homedir()
  const runtimeDir = env.XDG_RUNTIME_DIR
  const docker = [
    '/var/run/docker.sock',
    runtimeDir && join(runtimeDir, 'docker.sock'),
    join(home, '.docker/run/docker.sock'),
    join(home, '.docker/desktop/docker.sock'),
  ]
  const other = [
    runtimeDir && join(runtimeDir, 'podman/podman.sock'),
    '/run/podman/podman.sock',
    join(home, '.colima/default/docker.sock'),
    join(home, '.rd/docker.sock'),
  ]
  for (const path of docker) {
    if (path && isSocket(path)) endpoints.push({ dockerHost: `unix://${path}`, autodetected: true })
  }
  for (const path of other) {
    if (path && isSocket(path))
      endpoints.push({ dockerHost: `unix://${path}`, autodetected: false })
  }
  return endpoints
}

/** Whether a Docker-compatible API answers `GET /_ping` at `dockerHost` within `timeoutMs`. */
export function pingRuntime(dockerHost: string, timeoutMs: number, tls = false): Promise<boolean> {
  return new Promise((resolve) => {
    let socket: Socket
    try {
      if (dockerHost.startsWith('unix://')) {
        socket = connect({ path: dockerHost.slice('unix://'.length) })
      } else if (dockerHost.startsWith('tcp://')) {
        const url = new URL(dockerHost.replace(/^tcp:/, 'http:'))
        socket = connect({ host: url.hostname, port: Number(url.port || (tls ? 2376 : 2375)) })
      } else {
        resolve(false)
        return
      }
    } catch {
      resolve(false)
      return
    }
    let received = ''
    const finish = (answer: boolean) => {
      clearTimeout(timer)
      socket.destroy()
      resolve(answer)
    }
    const timer = setTimeout(() => finish(false), timeoutMs)
    timer.unref()
    socket.on('error', () => finish(false))
    socket.on('connect', () => {
      // behind TLS an HTTP ping would need certificates: an open port is answer enough
      if (tls) finish(true)
      else socket.write('GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n')
    })
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1')
      if (received.includes('\r\n')) finish(/^HTTP\/1\.[01] 200 /.test(received))
    })
    socket.on('end', () => finish(/^HTTP\/1\.[01] 200 /.test(received)))
  })
}

/**
 * Finds a container runtime that answers, or `undefined`. `BALLAST_TESTCONTAINERS=0` turns
 * containers off. Costs a `stat` per candidate socket when nothing is installed.
 */
export async function findContainerRuntime(
  env: Readonly<Record<string, string | undefined>>,
  timeoutMs = 1000,
): Promise<RuntimeEndpoint | undefined> {
  const flag = env.BALLAST_TESTCONTAINERS?.trim().toLowerCase()
  if (flag === '0' || flag === 'false' || flag === 'off') return undefined
  const tls = Boolean(env.DOCKER_TLS_VERIFY && env.DOCKER_TLS_VERIFY !== '0')
  for (const endpoint of runtimeEndpoints(env)) {
    if (await pingRuntime(endpoint.dockerHost, timeoutMs, tls)) return endpoint
  }
  return undefined
}

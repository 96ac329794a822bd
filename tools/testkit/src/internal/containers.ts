/** The servers testcontainers can start, and how. Topologies are not among them. */
export type ContainerServer = 'redis' | 'mysql' | 'amqp'

interface ContainerSpec {
  image: string
  port: number
  environment: Record<string, string>
  log: RegExp
  times: number
  url(host: string, port: number): string
}

const SPECS: Record<ContainerServer, ContainerSpec> = {
  redis: {
    image: 'redis:7',
    port: 6379,
    environment: {},
    log: /Ready to accept connections/,
    times: 1,
    url: (host, port) => `redis://${host}:${port}`,
  },
  mysql: {
    image: 'mariadb:10.11',
    port: 3306,
    environment: { MARIADB_ALLOW_EMPTY_ROOT_PASSWORD: '1', MARIADB_DATABASE: 'test' },
    // the entrypoint's temporary init server logs it first, the real server second
    log: /ready for connections/i,
    times: 2,
    url: (host, port) => `mysql://root@${host}:${port}/test`,
  },
  amqp: {
    image: 'rabbitmq:3',
    port: 5672,
    environment: {},
    log: /Server startup complete/,
    times: 1,
    url: (host, port) => `amqp://guest:guest@${host}:${port}`,
  },
}

/** Whether testcontainers can provide `name`. */
export function hasContainer(name: string): name is ContainerServer {
  return Object.hasOwn(SPECS, name)
}

/** The image a server's container runs, for messages. */
export function containerImage(name: ContainerServer): string {
  return SPECS[name].image
}

const started = new Map<ContainerServer, Promise<string>>()

/**
 * Starts the container for `name` once per process and returns its URL. testcontainers is
 * imported here, lazily, so machines without a container runtime never load it; its reaper
 * removes the containers when the process exits.
 */
export function startContainer(name: ContainerServer): Promise<string> {
  let url = started.get(name)
  if (!url) {
    url = (async () => {
      const { GenericContainer, Wait } = await import('testcontainers')
      const spec = SPECS[name]
      const container = await new GenericContainer(spec.image)
        .withEnvironment(spec.environment)
        .withExposedPorts(spec.port)
        .withWaitStrategy(Wait.forLogMessage(spec.log, spec.times))
        .withStartupTimeout(120_000)
        .start()
      return spec.url(container.getHost(), container.getMappedPort(spec.port))
    })()
    started.set(name, url)
    url.catch(() => started.delete(name))
  }
  return url
}

// rascal ships no types; the benchmark uses a small part of its promise API.
declare module 'rascal' {
  interface Publication {
    on(event: 'success' | 'error' | 'return', listener: (arg: unknown) => void): Publication
  }
  interface BrokerAsPromised {
    publish(name: string, message: unknown): Promise<Publication>
    on(event: 'error', listener: (error: unknown) => void): void
    shutdown(): Promise<void>
  }
  const rascal: {
    BrokerAsPromised: { create(config: unknown): Promise<BrokerAsPromised> }
    withDefaultConfig(config: unknown): unknown
  }
  export default rascal
}

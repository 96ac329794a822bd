/** The local servers' addresses as the README examples spell them, by the variable that may replace each. */
export const LOCAL_ADDRESSES: Readonly<Record<string, string>> = {
  REDIS_URL: 'redis://127.0.0.1:6379',
  MYSQL_URL: 'mysql://root@127.0.0.1:3306/test',
  MYSQL_PRIMARY_URL: 'mysql://root@127.0.0.1:3307/test',
  MYSQL_REPLICA_URL: 'mysql://root@127.0.0.1:3308/test',
  AMQP_URL: 'amqp://guest:guest@127.0.0.1:5672',
}

/**
 * The examples name the local servers; where the environment gives other addresses
 * (testkit's global setup exports the containers' URLs, CI may give the topologies'), an
 * example's code gets those instead.
 */
export function useServerAddresses(
  code: string,
  env: Readonly<Record<string, string | undefined>>,
): string {
  let result = code
  for (const [variable, address] of Object.entries(LOCAL_ADDRESSES)) {
    const given = env[variable]
    if (given && given !== address) result = result.replaceAll(address, given)
  }
  return result
}

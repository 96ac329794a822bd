#!/usr/bin/env bash
# The README's "run the shop" command. On a fresh clone: installs the toolchain, the
# dependencies and the Debian packages the shop runs (scripts/system-deps.sh: prometheus, which
# the supervisor starts to scrape every process, and chromium for the browser tests), makes sure
# the standard servers and the topologies (MariaDB primary/replica, Redis Cluster, the RabbitMQ
# cluster) are up, then starts the example shop in the foreground: schemas and seed data are
# created at first start, every service and instance runs as its own Node process under a
# supervisor, Prometheus scrapes them all, and the URLs are printed. Ctrl-C stops everything;
# scripts/shop-stop.sh stops leftovers.
# Environment: SHOP_PORT (gateway, default 8080), SHOP_NS (default shop), SHOP_PRODUCTS, SHOP_USERS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
pnpm install --frozen-lockfile --reporter=silent
bash scripts/system-deps.sh
bash scripts/servers.sh
bash scripts/topology.sh start mariadb redis-cluster rabbitmq-cluster # queues on the three-node cluster
cd examples/shop
exec node --conditions=@ballast/source --import tsx src/main.ts start

#!/usr/bin/env bash
# The README's "run the shop" command. Until the example shop lands (its issue fills this in),
# it installs the toolchain, makes sure the standard servers and the topologies are up, and
# prints their status.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
pnpm install --frozen-lockfile --reporter=silent
bash scripts/servers.sh
bash scripts/topology.sh start
bash scripts/topology.sh status
echo "shop: the example shop is not built yet; the servers above are what it will use"

#!/usr/bin/env bash
# Stops a running example shop and any leftover service process, from the pid files in
# examples/shop/.run (SHOP_RUN_DIR). Only processes whose command line is the shop's are signalled.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
cd examples/shop
exec node --conditions=@ballast/source --import tsx src/main.ts stop

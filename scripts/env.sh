# shellcheck shell=bash
# Sourced by every repo script: puts a Node >= 22 and the pinned pnpm on PATH.
# When the machine's Node is older than 22, Node 24 is fetched from the npm registry's
# `node@24` package into .tools/ (git-ignored), so a fresh machine needs nothing else.
# Set BALLAST_NODE_MAJOR=22 to run with Node 22 instead (CI's second test run).

BALLAST_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export BALLAST_ROOT

ballast_fetch_node() { # major -> prints the bin dir
  local major="$1" dir="$BALLAST_ROOT/.tools/node$1"
  if [ ! -x "$dir/node_modules/node/bin/node" ]; then
    echo "env: fetching Node $major from the npm registry into .tools/node$major" >&2
    mkdir -p "$dir"
    (cd "$dir" && echo '{"private":true}' > package.json &&
      npm install --no-save --no-audit --no-fund --loglevel=error "node@$major" >&2)
  fi
  echo "$dir/node_modules/node/bin"
}

ballast_node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

if [ -n "${BALLAST_NODE_MAJOR:-}" ]; then
  if [ "$(ballast_node_major)" != "$BALLAST_NODE_MAJOR" ]; then
    PATH="$(ballast_fetch_node "$BALLAST_NODE_MAJOR"):$PATH"
  fi
elif [ "$(ballast_node_major)" -lt 22 ]; then
  PATH="$(ballast_fetch_node 24):$PATH"
fi
export PATH

# pnpm, at the version pinned in package.json's packageManager field.
BALLAST_PNPM_VERSION="$(sed -n 's/.*"packageManager": *"pnpm@\([^"+]*\).*/\1/p' "$BALLAST_ROOT/package.json")"
if [ "$(pnpm --version 2>/dev/null || true)" != "$BALLAST_PNPM_VERSION" ]; then
  pnpm_dir="$BALLAST_ROOT/.tools/pnpm-$BALLAST_PNPM_VERSION"
  if [ ! -x "$pnpm_dir/node_modules/.bin/pnpm" ]; then
    echo "env: installing pnpm $BALLAST_PNPM_VERSION into .tools/" >&2
    mkdir -p "$pnpm_dir"
    (cd "$pnpm_dir" && echo '{"private":true}' > package.json &&
      npm install --no-save --no-audit --no-fund --loglevel=error "pnpm@$BALLAST_PNPM_VERSION" >&2)
  fi
  PATH="$pnpm_dir/node_modules/.bin:$PATH"
  export PATH
fi

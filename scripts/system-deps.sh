#!/usr/bin/env bash
# Debian packages the benchmarks and the shop's browser tests use: nginx (the reverse-proxy
# peer) and chromium (driven by playwright-core in examples/shop's end-to-end test). Installed
# only when missing and only where apt-get can run as root; otherwise the benchmark prints that
# the nginx row was left out, and the shop's browser test fails naming chromium.
set -uo pipefail
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: installing ${need[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}") >/dev/null 2>&1 ||
    echo "system-deps: could not install ${need[*]}; the benchmarks will leave those peers out"
  # Debian starts nginx on port 80 after installing it; the benchmarks start their own.
  (nginx -s stop || service nginx stop) >/dev/null 2>&1 || true
else
  echo "system-deps: ${need[*]} missing (not root or no apt-get); the benchmarks will leave those peers out"
fi
exit 0

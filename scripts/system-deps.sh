#!/usr/bin/env bash
# Debian packages the benchmarks and the shop use: nginx (the reverse-proxy peer), chromium
# (driven by playwright-core in examples/shop's browser tests) and prometheus (the shop's
# metrics server: scripts/shop.sh and the shop's tests start /usr/bin/prometheus, and its
# promtool checks the shop's rules). Installed only when missing and only where apt-get can run
# as root; otherwise the benchmark prints that the nginx row was left out, and the shop fails
# naming the package that is missing.
set -uo pipefail
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/prometheus ] || need+=(prometheus)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: installing ${need[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}") >/dev/null 2>&1 ||
    echo "system-deps: could not install ${need[*]}; the benchmarks will leave those peers out, the shop will not start without prometheus"
  # Debian starts nginx on port 80 and prometheus on port 9090 after installing them; the
  # benchmarks and the shop start their own, with their own configuration.
  (nginx -s stop || service nginx stop) >/dev/null 2>&1 || true
  service prometheus stop >/dev/null 2>&1 || true
else
  echo "system-deps: ${need[*]} missing (not root or no apt-get); the benchmarks will leave those peers out, the shop will not start without prometheus"
fi
exit 0

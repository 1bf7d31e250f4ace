#!/usr/bin/env bash
# Make sure the real services the tests and the demo need are present and running:
# MariaDB on 127.0.0.1:3306, Debian's prometheus/promtool and kcat, and Debian's chromium
# (the console's browser tests drive it with Playwright; nothing downloads a browser).
set -euo pipefail
need_apt=()
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v kcat >/dev/null || need_apt+=(kcat)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || need_apt+=(mariadb-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # the prometheus package may start a daemon on :9090; we run our own instances
  (service prometheus stop || pkill -x prometheus || true) >/dev/null 2>&1
fi
if ! mysqladmin -uroot -h127.0.0.1 --connect-timeout=2 ping >/dev/null 2>&1; then
  echo "starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 1 60); do
    mysqladmin -uroot -h127.0.0.1 --connect-timeout=2 ping >/dev/null 2>&1 && break
    sleep 0.5
  done
fi
mysqladmin -uroot -h127.0.0.1 --connect-timeout=2 ping >/dev/null

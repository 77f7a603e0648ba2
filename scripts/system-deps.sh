#!/usr/bin/env bash
# Installs the system pieces statekeeper's local infrastructure needs, only when missing:
# a Java 17+ runtime and Maven (for the Kafka broker jars), Debian's redis-server, and
# Chromium with chromedriver (the dashboard's browser test).
# Skips each one that an external service makes unnecessary.
set -euo pipefail

need_apt=()
if [[ -z "${STATEKEEPER_KAFKA_BOOTSTRAP:-}" ]]; then
  command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
fi
if [[ -z "${STATEKEEPER_REDIS_URL:-}" ]] && ! command -v redis-server >/dev/null 2>&1 \
    && [[ ! -x /usr/bin/redis-server ]]; then
  need_apt+=(redis-server)
fi
# Debian's Chromium and its driver, for the dashboard's browser test (never downloaded).
[[ -x /usr/bin/chromium ]] || need_apt+=(chromium)
[[ -x /usr/bin/chromedriver ]] || need_apt+=(chromium-driver)

if (( ${#need_apt[@]} == 0 )); then
  exit 0
fi

echo "system-deps: installing ${need_apt[*]} with apt-get"
SUDO=""
if [[ "$(id -u)" != "0" ]]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "system-deps: need root (or sudo) to apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: no apt-get here; install ${need_apt[*]} yourself" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
echo "system-deps: done"

#!/usr/bin/env bash
# Runs the whole test suite. Integration tests start their own services
# (Redis, Kafka, SMTP, browser) through fixtures and scripts/; under CI=true a
# service that cannot start fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the integration fixtures need: redis-server, and Java + Maven
# for scripts/kafka.sh (which fetches and caches the Kafka jars itself).
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)  # the Redis Cluster tests
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
# openssl makes the SMTP TLS test's certificate; quiet hours read the system time zones.
command -v openssl >/dev/null || missing+=(openssl)
[[ -e /usr/share/zoneinfo/Asia/Shanghai ]] || missing+=(tzdata)
# Prometheus + promtool: the alert rules are checked and evaluated against real processes.
command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
# Chromium + its driver for the demo page's browser test (selenium).
[[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]] || missing+=(chromium chromium-driver)
# A CJK font: the preference centre's Chinese page is screenshotted for docs/img.
[[ -e /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ]] || missing+=(fonts-wqy-zenhei)
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ "$(id -u)" != 0 ]] && ! command -v sudo >/dev/null; then
        echo "run-tests.sh: missing ${missing[*]} and not root: install them with apt-get" >&2
        exit 1
    fi
    sudo=""
    [[ "$(id -u)" != 0 ]] && sudo="sudo"
    echo "run-tests.sh: installing ${missing[*]} (apt)" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

exec .venv/bin/pytest -q "$@"

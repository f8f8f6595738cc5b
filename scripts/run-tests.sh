#!/usr/bin/env bash
# Runs the whole test suite. Integration tests start their own services
# (Redis, Kafka, SMTP, browser) through fixtures and scripts/; under CI=true a
# service that cannot start fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/pytest -q "$@"

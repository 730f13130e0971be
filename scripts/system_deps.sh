#!/usr/bin/env bash
# The system packages the test suite needs beyond what pip installs: Debian's libb64-0d, which the perf_analyzer
# binary in tritonclient 2.41.0's wheel links (tests/e2e/test_perf_analyzer.py), and chromium, which renders
# /docs with the network closed (tests/integration/test_openapi_docs.py), and postgresql, whose initdb and postgres
# binaries run a throw-away cluster for the PostgreSQL job store's tests (tests/postgres_cluster.py; the
# package's own cluster, if it starts one, is not used). `make test` runs this: it installs
# them as root with apt-get; elsewhere it says what is missing and goes on (those tests then skip, saying why).
set -euo pipefail
PACKAGES=(libb64-0d chromium postgresql)
say() { echo "system_deps.sh: $*" >&2; }

if ! command -v dpkg >/dev/null; then
  say "not a Debian system: install ${PACKAGES[*]} (or their equivalents) for the perf_analyzer, /docs and PostgreSQL tests"
  exit 0
fi
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
((${#missing[@]})) || exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  say "missing ${missing[*]}: run 'sudo apt-get install ${missing[*]}' for the perf_analyzer, /docs and PostgreSQL tests"
  exit 0
fi
say "apt-get install ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; then  # no package lists yet on a fresh machine
  apt-get update -q >/dev/null
  apt-get install -y -q "${missing[@]}" >/dev/null
fi

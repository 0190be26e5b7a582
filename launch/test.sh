#!/usr/bin/env bash
# The test command: install everything (launch/setup.sh), then run the whole test suite on CPU.
# Extra arguments go to pytest, e.g. `bash launch/test.sh -k spec -x`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash launch/setup.sh
exec "${DDPCIFAR_VENV:-.venv}/bin/python" -m pytest -p no:cacheprovider --timeout=900 "$@" tests

#!/usr/bin/env bash
# A short end-to-end run on one Python, in a venv of its own (.venv-<version>): install, `espzoo search`, then the
# demo cut to one epoch (pull from the local mirror, plan, evaluate, finetune, evaluate) on the shipped data.
# CI runs it on Python 3.11 after the full suite on the newest Python: `scripts/smoke.sh python3.11`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-python3.11}
version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
venv=.venv-$version
started=$SECONDS
make --no-print-directory venv PYTHON="$PYTHON" VENV="$venv"
echo "smoke: $venv installed with $("$venv/bin/python" -c 'import sys, espnet, torch; print(sys.version.split()[0], "espnet", espnet.__version__, "torch", torch.__version__)') in $((SECONDS - started)) s ($(du -sh "$venv" | cut -f1))"
"$venv/bin/espzoo" search librispeech --task asr --limit 3
"$venv/bin/python" scripts/demo.py --epochs 1 --out "$venv/smoke_out"
echo "smoke: Python $version passed in $((SECONDS - started)) s"

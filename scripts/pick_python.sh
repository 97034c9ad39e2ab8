#!/bin/sh
# Print the newest Python espzoo supports that runs on this machine: 3.13, then 3.12, then 3.11 (pyproject's
# requires-python). A name on PATH can be a pyenv shim for a version pyenv has installed but not selected, which
# exits non-zero when run: each candidate is run, and pyenv's own installs are tried after PATH.
root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
for v in 3.13 3.12 3.11; do
    for py in "python$v" "$root"/versions/$v*/bin/python$v; do
        if "$py" -c "import sys, venv; sys.exit(sys.version_info[:2] != tuple(map(int, '$v'.split('.'))))" \
            >/dev/null 2>&1; then
            echo "$py"
            exit 0
        fi
    done
done
echo "no Python 3.11-3.13 found; install one, or name one with PYTHON=" >&2
exit 1

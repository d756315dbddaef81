#!/usr/bin/env bash
# Run the test suite on the legacy stack (Python 3.6, TensorFlow 1.12) when a Python 3.6 interpreter exists.
# The virtual environment lives in the user's cache, keyed by the requirements file, so it is built once.
set -euo pipefail
cd "$(dirname "$0")/.."

python36=""
# pyenv's shim for python3.6 exists even when 3.6 is not the selected version, so each candidate must really run.
for candidate in "${PYTHON36:-}" "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3.6*/bin/python3.6 \
                 "$(command -v python3.6 || true)"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] && \
     "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 6))' >/dev/null 2>&1; then
    python36="$candidate"; break
  fi
done
if [ -z "$python36" ]; then
  echo "SKIPPED legacy stack: no Python 3.6 interpreter found (set PYTHON36 or install 3.6 with pyenv)"
  exit 0
fi

key=$(cat requirements-legacy.txt | sha256sum | cut -c1-12)
venv="${XDG_CACHE_HOME:-$HOME/.cache}/nodule-pggan/py36-$key"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "building $venv with $python36"
  rm -rf "$venv"
  "$python36" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade "pip<22"
  "$venv/bin/python" -m pip install -q -r requirements-legacy.txt
  touch "$venv/.complete"
fi
echo "legacy stack: $("$venv/bin/python" --version 2>&1), tensorflow $("$venv/bin/python" -c 'from nodules.util import tfcompat; print(tfcompat.TF_VERSION)' 2>/dev/null)"
"$venv/bin/python" -m pytest tests

#!/usr/bin/env bash
# rembg in a virtual environment of its own, where `u2edge bench` finds it, so that rembg's pinned
# dependencies never touch u2edge's. rembg gets the official u2netp weights from u2edge's cache at
# benchmark time and downloads nothing.
#
#   benchmarks/setup_rembg.sh [PYTHON]     # PYTHON: the interpreter that has u2edge (default: python3)
set -euo pipefail
python="${1:-python3}"
target="$("$python" -c 'from u2edge.bench.run import rembg_python; print(rembg_python().parent.parent)')"
if [ -x "$target/bin/python" ] && "$target/bin/python" -c 'import rembg' 2>/dev/null; then
    echo "rembg environment already at $target"
    exit 0
fi
rm -rf "$target"
"$python" -m venv "$target"
"$target/bin/pip" install --quiet --disable-pip-version-check "rembg[cpu,cli]==2.0.86"
echo "rembg environment ready at $target"

#!/usr/bin/env bash
# Opt-in speed build: a copy of the tree in build/compiled/ whose triggers/
# package (the scene engine: the replay's hot path) is compiled by mypyc, the
# compiler that ships with mypy (needs gcc and the Python headers). The source
# tree is left alone (no .so files beside the .py others edit); `make test`
# and `make demo` never use it. Run the replay from it:
#
#   scripts/build-compiled.sh [--test]   # --test: the engine and replay tests against it
#   cd build/compiled && ../../.venv/bin/python -m scenetrigger.cli.main replay EVENTS
#   .venv/bin/python bench/replay.py --compiled build/compiled
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/build/compiled
PY=${PYTHON:-$ROOT/.venv/bin/python}

"$PY" -c "import mypyc" 2>/dev/null || { echo "build-compiled: mypyc not found (pip install mypy)" >&2; exit 1; }
command -v "${CC:-gcc}" >/dev/null || { echo "build-compiled: no C compiler (gcc)" >&2; exit 1; }

rm -rf "$OUT"
mkdir -p "$OUT"
tar cf - --exclude=__pycache__ --exclude=bench/data --exclude=bench/out \
    triggers scenetrigger config channels agents strategies tests bench pyproject.toml \
    | tar xf - -C "$OUT"
cd "$OUT"
# mypyc builds through setuptools, which would validate pyproject.toml's
# [project] table (our setuptools is older than its license syntax): compile
# with it out of the way; it comes back for pytest's settings.
mv pyproject.toml pyproject.toml.keep
# The modules every event runs through; classify/userfilter (run only when a
# filtered scene would fire), reshape, durations and errors stay Python.
"$PY" -m mypyc triggers/{engine,scenes,state,profile,predicates,events}.py > build.log 2>&1 || { tail -30 build.log >&2; exit 1; }
mv pyproject.toml.keep pyproject.toml
rm -rf build
compiled=$("$PY" -c "import triggers.engine as e; print(e.__file__)")
[[ $compiled == *.so ]] || { echo "build-compiled: triggers.engine not compiled: $compiled" >&2; exit 1; }
echo "build-compiled: $(ls triggers/*.so | wc -l) modules compiled in $OUT" >&2

if [[ ${1:-} == --test ]]; then
    export SCENETRIGGER_SHARED=${SCENETRIGGER_SHARED:-$ROOT/../shared}
    # A plugin that fails the session unless the tests ran the compiled engine.
    printf '%s\n' 'import sys' '' '' \
        'def pytest_sessionfinish(session, exitstatus):' \
        '    for name in ("triggers.engine", "triggers.scenes", "triggers.state"):' \
        '        path = sys.modules[name].__file__ or ""' \
        '        if not path.endswith(".so"):' \
        '            raise SystemExit(f"build-compiled: tests ran {name} from {path}")' \
        > compiled_check.py
    "$PY" -m pytest -q -p no:cacheprovider -p compiled_check tests/triggers \
        tests/scenetrigger/test_replay_*.py tests/scenetrigger/test_embedded.py \
        tests/scenetrigger/test_id_limits.py
fi

#!/usr/bin/env bash
# Entry point for a fresh clone.
#   ./run.sh quick [pipeline.py options]   set up .venv, then run the whole pipeline (quick preset by default;
#                                          smoke: every stage on a few images in about a minute; cpu: the CPU's
#                                          real answer, about 90 minutes; paper: a GPU)
#   ./run.sh test  [pytest options]        set up .venv with the test tools, then run the tests (a few minutes:
#                                          all but the end-to-end runs marked slow)
#   ./run.sh test-slow [pytest options]    the end-to-end runs of the scripts and the pipeline (CI runs both)
#   ./run.sh setup                         only set up .venv
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
setup() {
  local req=$1
  if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
  fi
  # the stamp skips a reinstall when the requirement files have not changed; the dev set includes the
  # runtime set, so its stamp also stands for requirements.txt
  local hash stamp
  hash=$(cat requirements*.txt | sha256sum | cut -c1-16)
  stamp=".venv/.installed-$hash-$req"
  if [ ! -f "$stamp" ] && [ ! -f ".venv/.installed-$hash-requirements-dev.txt" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r "$req"
    touch "$stamp"
  fi
}
cmd=${1:-quick}; shift || true
case "$cmd" in
  quick|cpu|paper|smoke) setup requirements.txt; exec .venv/bin/python pipeline.py --preset "$cmd" "$@" ;;
  test) setup requirements-dev.txt; exec .venv/bin/python -m pytest -q -m "not slow" tests "$@" ;;
  test-slow) setup requirements-dev.txt; exec .venv/bin/python -m pytest -q -m slow tests "$@" ;;
  setup) setup requirements-dev.txt ;;
  *) echo "usage: ./run.sh {quick|smoke|cpu|paper|test|test-slow|setup} [options]" >&2; exit 2 ;;
esac

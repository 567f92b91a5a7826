#!/usr/bin/env bash
# Re-runs the LeNet' experiments one job at a time (2-core CPU), in priority order:
#   1. Table 1 (five models);
#   2. the worst case (standard suite, 100 iterations, Square 5000 queries, 1000 test
#      images) of the Table-1 `none` and `jr` models, in chunks of 100 images in a random
#      order, each image's outcome cached (an interrupted stage resumes; about half an
#      hour of one core per chunk on a 2-core CPU);
#   3. amortized JR (jr_frac2/4, jr_every2/4/8) against full JR, 3 seeds, Table-1 budget,
#      with APGD-CE (100 steps) on 200 test images per run;
#   4. the worst case of the adversarially trained models (at, jr_at);
#   5. the Figure-3 curves of the seven models.
# Each stage runs from a snapshot of the committed tree taken when it starts (git archive
# HEAD; the commit is logged), so uncommitted edits never reach a running queue.
# Logs: runs/logs/queue.log and runs/logs/<stage>.log.
#
# Usage: experiments/rerun.sh DATA_DIR [PYTHON]
set -u
DATA_DIR=${1:?usage: experiments/rerun.sh DATA_DIR [PYTHON]}
PY=${2:-python}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SRC="$ROOT/runs/queue_src"
LOGS="$ROOT/runs/logs"
mkdir -p "$LOGS"
COMMON=(--data_dir "$DATA_DIR" --workdir "$ROOT/runs/experiments"
  --out "$ROOT/runs/results" --figures "$ROOT/runs/results")
stage() {
  local name=$1; shift
  rm -rf "$SRC" && mkdir -p "$SRC"
  git -C "$ROOT" archive HEAD | tar -x -C "$SRC"
  echo "$(date -u +%FT%TZ) start $name at $(git -C "$ROOT" rev-parse --short HEAD): $*" \
    >> "$LOGS/queue.log"
  (cd "$SRC" && PYTHONPATH="$SRC" "$PY" experiments/hoffman.py "$@" "${COMMON[@]}") \
    > "$LOGS/$name.log" 2>&1
  echo "$(date -u +%FT%TZ) end $name: rc $?" >> "$LOGS/queue.log"
}
stage table1 table1
stage worst_none_jr worst_case --models none jr
stage amortized amortized --seeds 3 --apgd 200
stage worst_at worst_case --models at jr_at
stage robustness robustness

#!/usr/bin/env bash
# ftaudit on one GPU: the default study and lm-methods with engine.device=cuda against the CPU path,
# and the training benchmarks on the GPU. Prints ratios; about 6 minutes on one H200 (under 8).
#
#   bash benchmarks/gpu.sh                 # DEVICE=cuda, full size
#   DEVICE=cpu SIZE=tiny bash benchmarks/gpu.sh   # the script's CPU check at a tiny size (about 2 minutes on 2 cores)
#
# Python: $PYTHON if set, else the first of .venv/bin/python and python3 whose torch sees DEVICE. ftaudit
# runs from this checkout (PYTHONPATH=src: no install, no network); only when a dependency is missing does
# it try `pip install -e .` (which needs PyPI). Outputs (stores, logs) go under $OUT (else /tmp).
# Every step has its own time limit, and all of them share BUDGET seconds (default 450): a step that
# fails or runs out prints why and the script goes on; steps past the budget are skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-full}
BUDGET=${BUDGET:-450}
DEADLINE=$(( $(date +%s) + BUDGET ))
WORK=${OUT:-/tmp}/ftaudit-gpu
mkdir -p "$WORK"
LOG="$WORK/gpu.log"
: >"$LOG"
say() { echo "$*" | tee -a "$LOG"; }

# ------------------------------------------------------------------------------ python
pick_python() {
  local candidates=("${PYTHON:-}" .venv/bin/python python3 python)
  for py in "${candidates[@]}"; do
    [ -n "$py" ] && command -v "$py" >/dev/null 2>&1 || continue
    if "$py" -c "import sys, torch; d = torch.device('$DEVICE'); sys.exit(0 if d.type == 'cpu' or
        (d.type == 'cuda' and torch.cuda.is_available()) else 1)" 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  return 1
}
PY=$(pick_python) || { say "no python with a torch that sees $DEVICE (tried \$PYTHON, .venv/bin/python, python3)"; exit 1; }
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import ftaudit.cli, transformers, peft, opacus, dp_accounting, safetensors, typer, rich, sklearn" 2>>"$LOG"; then
  say "a dependency is missing for $PY: trying pip install -e . (needs PyPI)"
  "$PY" -m pip install -q -e . >>"$LOG" 2>&1 || { say "pip install failed (see $LOG)"; exit 1; }
fi
say "python $PY: $("$PY" -c "import torch; print('torch', torch.__version__, '| cuda', torch.version.cuda,
  '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')")"
say "device $DEVICE, size $SIZE, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), outputs in $WORK"

# ------------------------------------------------------------------------------ sizes
if [ "$SIZE" = tiny ]; then
  DEFAULT_SET=(data.audit_size=60 data.population_size=40 pretrain.epochs=3 finetune.epochs=4 finetune.references=3
               metrics.bootstrap=50 model.arch=mlp "model.hidden=[32]" pretrain.augment=0 finetune.augment=0)
  LM_SET=(lm.vocab_size=300 lm.block_len=24 lm.n_blocks=48 lm.population=16 lm.pretrain_blocks=96 lm.pretrain_epochs=2
          lm.n_layer=1 lm.n_embd=32 lm.pretrain_batch_size=8 finetune.batch_size=8 finetune.references=3
          metrics.bootstrap=100 "sweep.methods=[head, lora]" "sweep.lrs=[0.01]" sweep.canaries=4 sweep.canary_references=63)
  VEC_ARGS=(--models 4 --epochs 2); PACK_ARGS=(--models 4 --epochs 1 --pack-rows 0); BATCH_ARGS=(--models 4 --queries 500 --sizes 0,3)
  T_STUDY=240; T_BENCH=240
else
  DEFAULT_SET=(); LM_SET=()
  VEC_ARGS=(--models 32 --epochs 20); PACK_ARGS=(--models 16 --epochs 3 --pack-rows 0 64)
  BATCH_ARGS=(--models 32 --queries 4500)
  T_STUDY=120; T_BENCH=90
fi

# ------------------------------------------------------------------------------ helpers
declare -A SECONDS_OF
timed() {  # timed NAME LIMIT command...: wall seconds into SECONDS_OF[NAME] ("" when it failed), output to $WORK/NAME.log
  local name=$1 limit=$2; shift 2
  local start end rc left
  left=$(( DEADLINE - $(date +%s) ))
  if [ "$left" -lt 15 ]; then
    SECONDS_OF[$name]=""; say "$name: skipped (the ${BUDGET} s budget is spent)"; return
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  start=$(date +%s.%N)
  timeout "$limit" "$@" >"$WORK/$name.log" 2>&1
  rc=$?
  end=$(date +%s.%N)
  if [ $rc -eq 0 ]; then
    SECONDS_OF[$name]=$("$PY" -c "print(f'{$end - $start:.1f}')")
    say "$name: ${SECONDS_OF[$name]} s (load $(cut -d' ' -f1 /proc/loadavg))"
  else
    SECONDS_OF[$name]=""
    say "$name: FAILED (exit $rc$([ $rc -eq 124 ] && echo ", over ${limit} s")); last lines of $WORK/$name.log:"
    tail -n 5 "$WORK/$name.log" | sed 's/^/    /' | tee -a "$LOG"
  fi
}
ratio() {  # ratio LABEL SLOW FAST
  if [ -n "${SECONDS_OF[$2]:-}" ] && [ -n "${SECONDS_OF[$3]:-}" ]; then
    say "ratio $1: $("$PY" -c "print(f'{${SECONDS_OF[$2]} / ${SECONDS_OF[$3]}:.2f}')")  ($2 ${SECONDS_OF[$2]} s / $3 ${SECONDS_OF[$3]} s)"
  else
    say "ratio $1: not measured ($2 or $3 failed)"
  fi
}
sets() { local o; for o in "$@"; do printf -- '--set\0%s\0' "$o"; done; }
run_study() {  # run_study NAME STUDY DEVICE overrides...
  local name=$1 study=$2 device=$3; shift 3
  local args=()
  [ $# -gt 0 ] && mapfile -d '' args < <(sets "$@")
  rm -rf "$WORK/store-$name"
  timed "$name" "$T_STUDY" "$PY" -m ftaudit run "$study" -q "${args[@]}" --set "engine.device=$device" \
    --out "$WORK/store-$name"
}
headline() {  # the run's recorded engine and its best attack's AUC [CI]
  "$PY" - "$WORK/store-$1" <<'EOF' 2>/dev/null | tee -a "$LOG"
import json, sys
from pathlib import Path
runs = sorted(Path(sys.argv[1]).glob("runs/*/results.json"))
r = json.loads(runs[-1].read_text())
e = r.get("engine", {})
best = max(r.get("attacks", []), key=lambda a: a["auc"]["value"], default=None)
auc = f"{best['name']} AUC {best['auc']['value']:.3f} [{best['auc']['lo']:.3f}, {best['auc']['hi']:.3f}]" if best else "no attacks"
print(f"    {sys.argv[1].rsplit('store-', 1)[1]}: device {e.get('device')} dtype {e.get('dtype')}; {auc}")
EOF
}

# ------------------------------------------------------------------------------ studies
say "== studies: engine.device=$DEVICE against the CPU path (fresh stores, nothing cached)"
run_study default-device finetune-mia "$DEVICE" "${DEFAULT_SET[@]}"; headline default-device
run_study default-cpu finetune-mia cpu "${DEFAULT_SET[@]}"; headline default-cpu
ratio "default study, CPU / $DEVICE" default-cpu default-device
run_study lm-methods-device lm-methods "$DEVICE" "${LM_SET[@]}"; headline lm-methods-device
run_study lm-methods-cpu lm-methods cpu "${LM_SET[@]}"; headline lm-methods-cpu
ratio "lm-methods, CPU / $DEVICE" lm-methods-cpu lm-methods-device

# ------------------------------------------------------------------------------ benchmarks
say "== benchmarks on $DEVICE (each prints its own ratio line)"
for bench in vectorized_training packed_lora batched_inference; do
  case $bench in
    vectorized_training) args=("${VEC_ARGS[@]}") ;;
    packed_lora) args=("${PACK_ARGS[@]}") ;;
    batched_inference) args=("${BATCH_ARGS[@]}") ;;
  esac
  timed "$bench" "$T_BENCH" "$PY" "benchmarks/$bench.py" --device "$DEVICE" "${args[@]}"
  grep -E "ratio|accuracy gap|torch threads|params\)" "$WORK/$bench.log" | sed 's/^/    /' | tee -a "$LOG"
done
say "== done; full outputs in $WORK (gpu.log: this summary)"

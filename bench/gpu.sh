#!/usr/bin/env bash
# The GPU measurements in one script, for a CUDA machine whose python already has torch and torchvision
# (it installs nothing). Every step skips what a previous call already built, so a step cut off by a time
# limit resumes when the same command is run again.
#
#   bench/gpu.sh bench DATA OUT   paper-size splits (64px, and 32px as CIFAR), collective-model throughput at
#                                 both sizes (released path vs this project, eager and torch.compile), a short
#                                 collective run for a learngene, the individual phase one by one vs grouped
#   bench/gpu.sh paper DATA OUT   the paper preset on Tiny-ImageNet-100 (python pipeline.py --preset paper);
#                                 rerun until it writes its table, which ends with each stage's wall-clock time.
#                                 LIMIT=540 stops it cleanly after 540 s (inside a command time limit)
#
# DATA: the Tiny-ImageNet-100 folder (train.npz, val.npz); OUT: where the logs, CSVs and tables are copied.
# How to get DATA onto the lent machine in calls of at most 64 MiB: bench/RESULTS.md, "On a GPU".
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 3 ] || { echo "usage: bench/gpu.sh {bench|paper} DATA OUT" >&2; exit 2; }
what=$1 data=$2 out=$3
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$out"
log() { echo "[gpu.sh $(date -u +%H:%M:%S)] $*"; }
make_split() {  # make_split NAME [maker options]: build data/NAME once
  local name=$1; shift
  [ -f "data/$name/manifest.json" ] || $py utils/data_imagenet_mk.py --dataset tiny-imagenet-100 --path "$data" \
    --out "data/$name" "$@"
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"; } \
  | tee "$out/device.txt"
$py -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" \
  | tee -a "$out/device.txt"
git rev-parse HEAD 2>/dev/null | tee -a "$out/device.txt" || true

case $what in
  bench)
    make_split tiny-imagenet-100-paper-split
    make_split tiny-imagenet-100-paper32-split --size 32
    for px in 32 64; do
      path=data/tiny-imagenet-100-paper-split; [ $px = 32 ] && path=data/tiny-imagenet-100-paper32-split
      csv="$out/throughput-cuda-${px}px.csv"
      [ -f "$csv" ] || { log "throughput ${px}px"; $py bench/throughput.py --path $path --steps 200 \
        --compile default reduce-overhead --out "$csv" 2>&1 | tee "$out/throughput-${px}px.log"; }
    done
    # a learngene to build individual models from: 3 collective tasks of 5 epochs (its quality does not matter here)
    lg=checkpoints/bench-gpu-collective
    resume=(); [ -f $lg/last.pt ] && resume=(--resume)
    [ -f $lg/learngene.pt ] || $py collective-model/val_lifelong_imagenet.py --path data/tiny-imagenet-100-paper-split \
      --out $lg --num_works 3 --epochs 5 "${resume[@]}"
    csv="$out/individual-phase-cuda.csv"
    [ -f "$csv" ] || { log "individual phase"; $py bench/individual_phase.py --path data/tiny-imagenet-100-paper-split \
      --learngene $lg/learngene.pt --num_target_tasks 10 --seeds 3 --epochs 30 --out "$csv" 2>&1 | tee "$out/individual-phase.log"; }
    ;;
  paper)
    status=0
    timeout "${LIMIT:-0}" $py pipeline.py --preset paper --data "$data" 2>&1 | tee -a "$out/paper.log" || status=$?
    cp -f checkpoints/tiny-imagenet-100-paper/stage_times.json "$out/" 2>/dev/null || true
    cp -f results/tiny-imagenet-100-paper.md results/tiny-imagenet-100-paper.csv "$out/" 2>/dev/null || true
    exit $status
    ;;
  *) echo "usage: bench/gpu.sh {bench|paper} DATA OUT" >&2; exit 2 ;;
esac

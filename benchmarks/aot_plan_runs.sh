#!/usr/bin/env bash
# The TPU planner measurements behind docs/planner.md, run one at a time (each
# compile uses both cores of a 2-core machine: never run two), each capped by `timeout`. Usage:
#   [CAP=seconds] benchmarks/aot_plan_runs.sh OUTDIR PART [PART ...]
# PART is one of
#   depth                 compile time vs depth: cifar_sharesnet164/1001, scan and loop, v5e:2x2
#   pod                   ImageNet ShaResNet-152 vs ResNet-152, global batch 4096 on v5e:16x16,
#                         each of POD_LAYOUTS (IMPL:REMAT_POLICY; default: scan with each
#                         policy, loop, loop + full)
#   gpu:TOPOLOGY          the paper configs (PAPER_CONFIGS) at their batch sizes, bfloat16, loop
#                         stages, on GPUs (h100:8, a100-40:1; needs the gpu extra)
#   paper:TOPOLOGY[:IMPL] the paper configs (PAPER_CONFIGS, default all 14) at their paper batch
#                         sizes (ImageNet 256, CIFAR 128), bfloat16, stage_impl IMPL (default
#                         scan), on TOPOLOGY
# EXTRA_FLAGS (e.g. --config.grad_reduce_dtype=bfloat16) go to every run, TAG ends every name.
# Each run's record goes to OUTDIR/<name>.json (aot --json), its table (or one-line error) to
# OUTDIR/<name>.txt, its exit code, wall time and libtpu release to OUTDIR/times;
# benchmarks/aot_plan_table.py turns the records into the tables of docs/planner.md.
# Another libtpu (e.g. the one a newer jax pins) is planned with, say,
#   pip install --no-deps --target DIR libtpu==0.0.50.1; PYTHONPATH=DIR benchmarks/aot_plan_runs.sh ...
set -u
out=${1:?OUTDIR}; shift
mkdir -p "$out"
cap=${CAP:-900}
cd "$(dirname "$0")/.."
libtpu=$(python -c 'import importlib.metadata as m; print(m.version("libtpu"))' 2>/dev/null || echo none)

run() {  # run NAME CONFIG TOPOLOGY [FLAGS...]
  local name=$1 config=$2 topology=$3; shift 3
  local start=$(date +%s)
  set -- "$@" ${EXTRA_FLAGS:-}
  name+=${TAG:-}
  rm -f "$out/$name.json"
  timeout "$cap" python -m sharesnet_jax.aot --config="configs/$config" --json="$out/$name.json" \
    --topology="$topology" --noeval --nofit_search "$@" >"$out/$name.txt" 2>&1
  local rc=$?
  echo "$name rc=$rc wall=$(( $(date +%s) - start ))s libtpu=$libtpu :: $config $topology $*" |
    tee -a "$out/times"
}

PAPER_CONFIGS=${PAPER_CONFIGS:-"imagenet_sharesnet152 imagenet_resnet152 imagenet_sharesnet101 imagenet_resnet101
  imagenet_sharesnet50 imagenet_resnet50 imagenet_sharesnet34 imagenet_resnet34
  cifar10_sharesnet164 cifar10_resnet164 cifar10_sharewrn40_4 cifar10_wrn40_4
  cifar100_sharewrn28_10 cifar100_wrn28_10"}

for part in "$@"; do
  case $part in
    depth)  # float32 as the CIFAR recipe; global batch 64 (16 per chip): scanned 1001 at 128
            # needs 18.98 GiB per v5e chip and would not fit
      for impl in scan loop; do
        for model in cifar_sharesnet164 cifar_sharesnet1001; do
          run "depth_${model}_$impl" cifar10_sharesnet164.py v5e:2x2 --config.model=$model \
            --config.batch_size=64 --config.stage_impl=$impl
        done
      done ;;
    pod)
      for model in sharesnet152 resnet152; do
        for layout in ${POD_LAYOUTS:-scan:full scan:conv_outputs scan:none loop:none loop:full}; do
          set -- ${layout/:/ }
          run "pod_${model}_$1_$2" imagenet_$model.py v5e:16x16 --config.dtype=bfloat16 \
            --config.batch_size=4096 --config.stage_impl=$1 --config.remat_policy=$2
        done
      done ;;
    gpu:*)
      topology=${part#gpu:}
      for config in $PAPER_CONFIGS; do
        run "gpu_${config}_${topology/:/-}" $config.py "$topology" --config.dtype=bfloat16
      done ;;
    paper:*)
      IFS=: read -r _ generation shape impl <<<"$part"
      impl=${impl:-scan}
      for config in $PAPER_CONFIGS; do
        run "paper_${config}_${generation}-${shape}_$impl" $config.py "$generation:$shape" \
          --config.dtype=bfloat16 --config.stage_impl=$impl
      done ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done

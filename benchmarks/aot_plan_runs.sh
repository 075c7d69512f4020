#!/usr/bin/env bash
# The TPU planner measurements (compile time vs depth; ImageNet and paper configs on TPU
# slices), run one at a time, niced, each capped by `timeout`. Usage:
#   [CAP=seconds] benchmarks/aot_plan_runs.sh OUTDIR [a|b|c|d ...]
# Each run's table (or one-line error) goes to OUTDIR/<name>.txt, its wall time to OUTDIR/times.
set -u
out=${1:?OUTDIR}; shift
mkdir -p "$out"
cap=${CAP:-240}

run() {  # run NAME CONFIG TOPOLOGY [FLAGS...]
  local name=$1 config=$2 topology=$3; shift 3
  local start=$(date +%s)
  nice -n 15 timeout "$cap" python -m sharesnet_jax.aot --config="configs/$config" \
    --topology="$topology" --noeval --nofit_search "$@" >"$out/$name.txt" 2>&1
  local rc=$?
  echo "$name rc=$rc wall=$(( $(date +%s) - start ))s :: $config $topology $*" | tee -a "$out/times"
}

for part in "${@:-a b c}"; do
  case $part in
    a)  # compile time vs depth, v5e:2x2, global batch 128, float32 (the CIFAR recipe)
      for impl in scan loop; do
        run "a_sharesnet164_$impl" cifar10_sharesnet164.py v5e:2x2 --config.stage_impl=$impl
        run "a_sharesnet1001_$impl" cifar10_sharesnet164.py v5e:2x2 \
          --config.model=cifar_sharesnet1001 --config.stage_impl=$impl
      done ;;
    b)  # ImageNet 152-layer twins, bfloat16, global batch 4096 on v5e:16x16 (16 per chip)
      for model in sharesnet152 resnet152; do
        run "b_${model}_scan_remat" imagenet_$model.py v5e:16x16 --config.dtype=bfloat16 \
          --config.batch_size=4096 --config.stage_impl=scan --config.remat=True
        run "b_${model}_scan" imagenet_$model.py v5e:16x16 --config.dtype=bfloat16 \
          --config.batch_size=4096 --config.stage_impl=scan
        run "b_${model}_loop" imagenet_$model.py v5e:16x16 --config.dtype=bfloat16 \
          --config.batch_size=4096 --config.stage_impl=loop
      done ;;
    c)  # paper configs at the paper's batch sizes (ImageNet 256, CIFAR 128), bfloat16, scan
      for topology in v5e:2x4 v5p:2x2x1 v6e:2x4; do
        for config in imagenet_sharesnet152.py imagenet_resnet152.py cifar10_sharesnet164.py; do
          run "c_${config%.py}_${topology}" $config $topology --config.dtype=bfloat16 \
            --config.stage_impl=scan
        done
      done ;;
    d)  # what fitted in the time left after c's ImageNet rows hit the cap (run with CAP=480)
      run d_imagenet_sharesnet152_v5e:2x4 imagenet_sharesnet152.py v5e:2x4 \
        --config.dtype=bfloat16 --config.stage_impl=scan
      for topology in v5p:2x2x1 v6e:2x4; do
        run "d_cifar10_sharesnet164_${topology}" cifar10_sharesnet164.py $topology \
          --config.dtype=bfloat16 --config.stage_impl=scan
      done ;;
  esac
done

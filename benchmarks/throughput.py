"""Training throughput and memory of the train step, for any models, batch, dtype and input size.

    python benchmarks/throughput.py --models resnet50 sharesnet50 --batch 8 --steps 3
    python benchmarks/throughput.py --models cifar_resnet56 cifar_sharesnet56 --batch 32
    python benchmarks/throughput.py --models wrn28_10 sharewrn28_10 --batch 512 \
        --dtype bfloat16 --peak-tflops 989      # on an H100/H200

The step is `sharesnet_jax.train`'s (same jit shardings and donation, SGD + Nesterov from
`optim`) on a synthetic uint8 batch already on the device, so the input pipeline is not measured
(benchmarks/input_pipeline.py does that). Per model, in a fresh process: compile time (lower +
compile), median step time over `--steps` timed steps after `--warmup` (each step waited for
with block_until_ready), images/s, the forward multiply-adds per image (`stats.forward_macs`;
sharing changes parameters, not compute), the training FLOP/s they imply by the planner's
count (`preflight.plan.train_flops_per_device`: 2 FLOPs per MAC times 3 passes, forward plus a
backward of twice its cost, or 4 with `--remat-policy full`, which recomputes the forward) and, with `--peak-tflops` (one device's peak in the
compute dtype), the MFU. Memory: XLA's accounting of the compiled step (temp: scratch besides
arguments and outputs, mostly activations kept for the backward pass; arguments: state + batch)
and, on GPU/TPU, the device's peak bytes in use (none on CPU).
"""

from __future__ import annotations

import argparse
import sys

import common
from sharesnet_jax.models import REMAT_POLICIES

SCRIPT = "benchmarks/throughput.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "sharesnet50"])
    parser.add_argument("--batch", type=int, default=32, help="global batch (all devices)")
    parser.add_argument("--dtype", default="float32", choices=sorted(common.DTYPES),
                        help="compute dtype (parameters stay float32)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="square input side (default: 32 for CIFAR nets, 224 for ImageNet)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="default: 100 for WRN-28-10, 10 other CIFAR nets, 1000 ImageNet")
    parser.add_argument("--stage-impl", default="loop", choices=["loop", "scan"])
    parser.add_argument("--remat-policy", default="none", choices=REMAT_POLICIES,
                        help="what each block keeps for the backward pass")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak TFLOP/s of one device in --dtype, for the MFU column")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="time limit of each model's measurement (default: none)")
    args = parser.parse_args(argv)

    specs = [common.make_spec(name, batch=args.batch, image_size=args.image_size,
                              dtype=args.dtype, stage_impl=args.stage_impl,
                              remat_policy=args.remat_policy,
                              num_classes=args.num_classes, steps=args.steps,
                              warmup=args.warmup)
             for name in args.models]
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    results = common.run_all(specs, max_seconds=args.max_seconds, log=log)

    rows = []
    for spec, result in results:
        ok = "error" not in result
        rows.append([
            spec["model"], spec["stage_impl"] + (
                "" if spec["remat_policy"] == "none" else f" +{spec['remat_policy']}"),
            f"{spec['batch']}x{spec['image_size']}x{spec['image_size']}", spec["dtype"],
            common.fmt(result.get("params"), ","),
            common.fmt(result["macs"] / 1e9 if ok else None, ".3f"),
            common.fmt(result["lower_s"] + result["compile_s"] if ok else None, ".1f"),
            common.fmt(result["step_s"] * 1e3 if ok else None, ",.1f"),
            common.fmt(result.get("images_per_s"), ",.1f"),
            common.fmt(common.train_tflops(result) if ok else None, ".3f"),
            common.fmt(100 * common.mfu(result, args.peak_tflops)
                       if ok and args.peak_tflops else None, ".1f"),
            common.fmt_bytes(result.get("temp_bytes")),
            common.fmt_bytes(result.get("argument_bytes")),
            common.fmt_bytes(result.get("peak_bytes")),
            result.get("error", ""),
        ])
    print(f"command: {common.command_line(SCRIPT, argv)}")
    print(common.describe_environment(common.first_env(results)))
    print(f"median of {args.steps} timed steps after {args.warmup} warm-up; training FLOP/s = "
          f"2 x forward MACs x passes (3, 4 with remat_policy=full) x img/s" + (f"; MFU at {args.peak_tflops:g} TFLOP/s per device"
                                        if args.peak_tflops else ""))
    print()
    print(common.markdown_table(
        ["model", "impl", "batch x input", "dtype", "params", "GMACs/img", "compile (s)",
         "step (ms)", "img/s", "TFLOP/s", "MFU (%)", "XLA temp (MiB)", "XLA args (MiB)",
         "device peak (MiB)", "note"], rows))
    return 1 if any("error" in r and not r.get("timeout") for _, r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

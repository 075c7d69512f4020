"""Compile time of the train step against depth, unrolled (stage_impl='loop') and scanned.

    python benchmarks/compile_time.py                       # ShaResNet-56, -164, -1001
    python benchmarks/compile_time.py --models cifar_sharesnet56 cifar_sharesnet164 \
        --batch 8 --max-seconds 300

The step is `sharesnet_jax.train`'s (see benchmarks/common.py), each (model, impl) measured in a
fresh process with the persistent compilation cache off: trace + lower to StableHLO, then XLA's
compile (which on GPU includes autotuning), then the median step time. The unrolled step grows
with depth (CIFAR ShaResNet-1001 has 111 blocks per stage, 333 in all) while the scanned one
compiles the blocks 2..n of each stage once.

On XLA:CPU (2 cores, batch 8) the unrolled ShaResNet-164 took about 30 s to compile and the
unrolled ShaResNet-1001 did not finish within 300 s (the scanned one: 6 s), while gradients
through a scan whose body has convolutions run 10-20x slower than the unrolled loop there (scan
is for accelerators). A measurement that runs past `--max-seconds` (default 600) is stopped and
its row says where (lowering, compile or steps).
"""

from __future__ import annotations

import argparse
import sys

import common

SCRIPT = "benchmarks/compile_time.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+",
                        default=["cifar_sharesnet56", "cifar_sharesnet164", "cifar_sharesnet1001"])
    parser.add_argument("--impls", nargs="+", default=["loop", "scan"], choices=["loop", "scan"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", default="float32", choices=sorted(common.DTYPES))
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=600.0,
                        help="time limit of each (model, impl) measurement, compile included")
    args = parser.parse_args(argv)

    specs = [common.make_spec(name, batch=args.batch, image_size=args.image_size,
                              dtype=args.dtype, stage_impl=impl, steps=args.steps,
                              warmup=args.warmup)
             for name in args.models for impl in args.impls]
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    results = common.run_all(specs, max_seconds=args.max_seconds, log=log)

    from sharesnet_jax.models import create_model  # noqa: PLC0415 (parent: shapes only)

    rows = []
    for spec, result in results:
        model = create_model(spec["model"], num_classes=spec["num_classes"])
        blocks = sum(model.stage_sizes)
        ok = "error" not in result
        rows.append([
            spec["model"], blocks, spec["stage_impl"],
            f"{spec['batch']}x{spec['image_size']}x{spec['image_size']}", spec["dtype"],
            common.fmt(result["lower_s"] if ok else None, ".1f"),
            common.fmt(result["compile_s"] if ok else None, ".1f"),
            common.fmt(result["lower_s"] + result["compile_s"] if ok else None, ".1f"),
            common.fmt(result["step_s"] * 1e3 if ok else None, ",.0f"),
            common.fmt(result.get("images_per_s"), ",.1f"),
            common.fmt_bytes(result.get("temp_bytes")),
            result.get("error", ""),
        ])
    print(f"command: {common.command_line(SCRIPT, argv)}")
    print(common.describe_environment(common.first_env(results)))
    print(f"lower = trace + lower to StableHLO; compile = XLA; step = median of {args.steps} "
          f"timed steps after {args.warmup} warm-up")
    print()
    print(common.markdown_table(
        ["model", "blocks", "impl", "batch x input", "dtype", "lower (s)", "compile (s)",
         "total (s)", "step (ms)", "img/s", "XLA temp (MiB)", "note"], rows))
    return 1 if any("error" in r and not r.get("timeout") for _, r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

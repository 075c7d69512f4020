"""The accelerator benchmark: one prepared run for one H100/H200 that finishes in under 8 minutes.

    python benchmarks/gpu_bench.py                    # the full run (bf16), about 7 minutes
    python benchmarks/gpu_bench.py --smoke            # tiny shapes, any machine (CPU: ~1 min)
    bash benchmarks/gpu_bench.sh                      # the same, the table also saved to a file

It measures the training step of `sharesnet_jax.train` (jitted with the same shardings and
donation, SGD + Nesterov from `optim`, synthetic uint8 batches already on the device), in bf16:

1. ResNet-50 vs ShaResNet-50 and ResNet-152 vs ShaResNet-152, batch 256 at 224x224;
2. WRN-28-10 vs ShaWRN-28-10 (100 classes and dropout 0.3, as on CIFAR-100), batch 512 at
   32x32;
3. CIFAR ShaResNet-164 and ShaResNet-1001 with stage_impl='scan' and 'loop' (unrolled), batch
   128 at 32x32: compile time and step time against depth.

and prints ONE markdown table: compile time (lower + compile of the step), median step time over
timed steps after warm-up, images/s, the model FLOP/s (the planner's count: 6 x forward multiply-adds per image, no remat) and
the MFU they imply at `--peak-tflops` per device (default 989: H100/H200 SXM dense bf16), XLA's
temp allocation of the compiled step and the device's peak memory in use.

Every measurement runs in a fresh worker process with a time limit: its own cap, and never more
than what is left of `--budget-seconds` (420 s by default, so that the whole run stays under 8
minutes). A measurement that runs out of time is killed and its row says where it stopped
(e.g. the unrolled ShaResNet-1001 compile); one that cannot start in the time left is skipped
and says so. The most important measurements come first.

Imports jax, flax, optax, numpy, ml_collections (pure Python; bring its wheel where it is
missing) and the TF-free modules of sharesnet_jax: it needs no TensorFlow, TFDS or clu
(tests/test_performance.py checks that with them blocked).
"""

from __future__ import annotations

import argparse
import sys
import time

import common

SCRIPT = "benchmarks/gpu_bench.py"
H100_DENSE_BF16_TFLOPS = 989.0


def full_plan(dtype: str, steps: int | None) -> list[dict]:
    def spec(model, batch, size, section, max_seconds, impl="loop", ref=None, timed=20,
             warmup=3, dropout_rate=None):
        return common.make_spec(model, batch=batch, image_size=size, dtype=dtype,
                                stage_impl=impl, dropout_rate=dropout_rate,
                                steps=steps or timed, warmup=warmup, section=section, ref=ref,
                                max_seconds=max_seconds)

    imagenet, wide, depth = "ImageNet", "CIFAR-100 wide, dropout 0.3", "depth: scan vs loop"
    return [
        spec("resnet50", 256, 224, imagenet, 150),
        spec("sharesnet50", 256, 224, imagenet, 150, ref=("resnet50", "loop")),
        # The paper's CIFAR-100 recipe: 100 classes, dropout 0.3.
        spec("wrn28_10", 512, 32, wide, 120, dropout_rate=0.3),
        spec("sharewrn28_10", 512, 32, wide, 120, ref=("wrn28_10", "loop"), dropout_rate=0.3),
        spec("resnet152", 256, 224, imagenet, 200),
        spec("sharesnet152", 256, 224, imagenet, 200, ref=("resnet152", "loop")),
        spec("cifar_sharesnet164", 128, 32, depth, 90, impl="scan", timed=10),
        spec("cifar_sharesnet164", 128, 32, depth, 150, ref=("cifar_sharesnet164", "scan"),
             timed=10),
        spec("cifar_sharesnet1001", 128, 32, depth, 120, impl="scan", timed=5, warmup=2),
        # Unrolled 1001 layers: the compile that may not finish; it gets whatever is left.
        spec("cifar_sharesnet1001", 128, 32, depth, None, ref=("cifar_sharesnet1001", "scan"),
             timed=5, warmup=2),
    ]


def smoke_plan(dtype: str, steps: int | None) -> list[dict]:
    """The same code paths at toy sizes: a plain/shared pair and scan vs loop (3 workers)."""

    def spec(model, section, impl="loop", ref=None):
        return common.make_spec(model, batch=2, image_size=16, dtype=dtype, stage_impl=impl,
                                steps=steps or 2, warmup=1, section=section, ref=ref,
                                max_seconds=120, persistent_cache=True)

    return [
        spec("cifar_resnet20", "smoke: pair"),
        spec("cifar_sharesnet20", "smoke: pair", ref=("cifar_resnet20", "loop")),
        spec("cifar_sharesnet20", "smoke: scan vs loop", impl="scan",
             ref=("cifar_sharesnet20", "loop")),
    ]


def note(spec: dict, result: dict, by_key: dict) -> str:
    if "error" in result:
        return result["error"]
    if not spec.get("ref"):
        return ""
    ref_model, ref_impl = spec["ref"]
    ref = by_key.get((ref_model, ref_impl))
    if ref is None or "error" in ref:
        return f"({ref_model} {ref_impl}: no result)"
    if ref_model != spec["model"]:
        return (f"{result['images_per_s'] / ref['images_per_s']:.2f}x the img/s, "
                f"{result['params'] / ref['params']:.2f}x the params of {ref_model}")
    ref_compile = ref["lower_s"] + ref["compile_s"]
    this_compile = result["lower_s"] + result["compile_s"]
    return (f"{spec['stage_impl']} vs {ref_impl}: compile {this_compile / ref_compile:.2f}x, "
            f"step {result['step_s'] / ref['step_s']:.2f}x")


def table(results: list[tuple[dict, dict]], peak_tflops: float | None) -> str:
    by_key = {(s["model"], s["stage_impl"]): r for s, r in results}
    rows = []
    for spec, result in results:
        shape = f"{spec['batch']}x{spec['image_size']}px"
        ok = "error" not in result
        rows.append([
            spec["section"], spec["model"], spec["stage_impl"], shape, spec["dtype"],
            common.fmt(result.get("params"), ","),
            common.fmt(result["macs"] / 1e9 if ok else None, ".3f"),
            common.fmt(result["lower_s"] + result["compile_s"] if ok else None, ".1f"),
            common.fmt(result["step_s"] * 1e3 if ok else None, ",.1f"),
            common.fmt(result.get("images_per_s"), ",.0f"),
            common.fmt(common.train_tflops(result) if ok else None, ".1f"),
            common.fmt(100 * common.mfu(result, peak_tflops) if ok and peak_tflops else None,
                       ".1f"),
            common.fmt_bytes(result.get("temp_bytes"), common.GIB),
            common.fmt_bytes(result.get("peak_bytes"), common.GIB),
            note(spec, result, by_key),
        ])
    headers = ["section", "model", "impl", "batch x input", "dtype", "params", "GMACs/img",
               "compile (s)", "step (ms)", "img/s", "TFLOP/s", "MFU (%)", "XLA temp (GiB)",
               "device peak (GiB)", "note"]
    return common.markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="toy sizes and a few tiny models, to check that it runs (any machine)")
    parser.add_argument("--peak-tflops", type=float, default=H100_DENSE_BF16_TFLOPS,
                        help="peak dense TFLOP/s of one device in --dtype, for the MFU "
                             "(default 989: H100/H200 SXM bf16)")
    parser.add_argument("--budget-seconds", type=float, default=None,
                        help="wall-clock budget of all measurements (default 420, smoke 240)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per measurement (default 20 for ImageNet and WRN, "
                             "10 for ShaResNet-164, 5 for -1001; smoke 2)")
    parser.add_argument("--dtype", default=None, choices=sorted(common.DTYPES),
                        help="compute dtype (default bfloat16; smoke float32, quicker on CPU)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    dtype = args.dtype or ("float32" if args.smoke else "bfloat16")
    budget = args.budget_seconds or (240.0 if args.smoke else 420.0)
    plan = (smoke_plan if args.smoke else full_plan)(dtype, args.steps)

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    results = common.run_all(plan, budget_s=budget, min_start_s=5.0 if args.smoke else 20.0,
                             log=log)
    env = common.first_env(results)
    print(f"command: {common.command_line(SCRIPT, argv)}")
    print(common.describe_environment(env))
    print(f"measured: training step (fwd + bwd + SGD/Nesterov update) on synthetic device "
          f"data; median of timed steps after warm-up; MFU = 6 x forward MACs x img/s / "
          f"({args.peak_tflops:g} TFLOP/s x {env['device_count'] if env else '?'} device(s))"
          + ("; SMOKE RUN: toy sizes, figures meaningless" if args.smoke else ""))
    print()
    print(table(results, args.peak_tflops))
    print()
    print(f"total wall time {time.perf_counter() - started:.0f} s (budget {budget:.0f} s for "
          f"the measurements)")
    failed = [r for _, r in results if "error" in r and not (r.get("timeout") or r.get("skipped"))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

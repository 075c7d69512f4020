"""Peak temporary memory of a train-step-like fwd+bwd under each remat_policy.

XLA's own accounting: `jax.jit(step).lower(...).compile().memory_analysis().temp_size_in_bytes`,
the scratch the compiled step needs besides its arguments and outputs (mostly the activations
kept for the backward pass). Nothing is run and no weights are allocated: the step is lowered on
abstract shapes, so this measures any model at any batch on any backend in compile time only.

    python benchmarks/remat_memory.py
    python benchmarks/remat_memory.py --models cifar_sharesnet164 sharesnet50 --batch 32 --impls loop scan

The step: train-mode forward (BatchNorm batch statistics, dropout), softmax cross-entropy, and
the gradient of every parameter; its outputs are the loss, the gradients and the new batch
statistics (the optimizer update is left out: it adds no activations).

On XLA:CPU, remat saves memory only under stage_impl='scan'. In the unrolled loop the compiled
CPU step keeps none of the optimization barriers jax.checkpoint puts around the recomputation, and
the recomputation is then merged back into the forward pass by CSE or placed where it saves
nothing: the temp stays the same or grows. Under scan the loop boundary keeps it apart. No
accelerator was measured here: run the script there to see what its compiler does.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from sharesnet_jax.models import REMAT_POLICIES, create_model  # noqa: E402
from sharesnet_jax.models.stats import abstract_variables, default_image_shape  # noqa: E402
from sharesnet_jax.units import MIB  # noqa: E402


def compiled_memory(name: str, *, batch: int, impl: str, remat_policy: str, num_classes: int,
                    image_size: int | None, dtype: str) -> dict:
    model = create_model(name, num_classes=num_classes, stage_impl=impl,
                         remat_policy=remat_policy, dtype=jnp.dtype(dtype))
    image_shape = default_image_shape(model)
    if image_size:
        image_shape = (image_size, image_size, image_shape[-1])
    variables = abstract_variables(model, image_shape)
    images = jax.ShapeDtypeStruct((batch, *image_shape), jnp.float32)
    labels = jax.ShapeDtypeStruct((batch,), jnp.int32)

    def step(params, batch_stats, images, labels):
        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": batch_stats}, images, train=True,
                mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, updates["batch_stats"]

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return loss, grads, new_stats

    start = time.perf_counter()
    compiled = jax.jit(step).lower(variables["params"], variables["batch_stats"], images,
                                   labels).compile()
    seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    return dict(temp=memory.temp_size_in_bytes, args=memory.argument_size_in_bytes,
                out=memory.output_size_in_bytes, compile_s=seconds, image=image_shape)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["cifar_sharesnet164", "sharesnet50"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--impls", nargs="+", default=["loop"], choices=["loop", "scan"])
    parser.add_argument("--image-size", type=int, default=None,
                        help="square input side (default: 32 for CIFAR nets, 224 for ImageNet)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="default: 10 for CIFAR nets, 1000 for ImageNet nets")
    parser.add_argument("--dtype", default="float32", help="compute dtype (params stay float32)")
    args = parser.parse_args(argv)

    shown = sys.argv[1:] if argv is None else argv
    print(f"command: python benchmarks/remat_memory.py {' '.join(shown)}")
    print(f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}), "
          f"jax {jax.__version__}, batch {args.batch}, compute dtype {args.dtype}")
    print()
    print("| model | impl | input | arguments (MiB) | "
          + " | ".join(f"temp, {policy} (MiB)" for policy in REMAT_POLICIES)
          + " | compile (s) |")
    print("|---|---|---|---|" + "---|" * len(REMAT_POLICIES) + "---|")
    for name in args.models:
        cifar = name.startswith(("cifar", "wrn", "sharewrn"))
        num_classes = args.num_classes or (10 if cifar else 1000)
        for impl in args.impls:
            rows = [compiled_memory(name, batch=args.batch, impl=impl, remat_policy=policy,
                                    num_classes=num_classes, image_size=args.image_size,
                                    dtype=args.dtype)
                    for policy in REMAT_POLICIES]
            side = "x".join(map(str, rows[0]["image"][:2]))
            print(f"| {name} | {impl} | {args.batch}x{side} | {rows[0]['args'] / MIB:,.1f} | "
                  + " | ".join(f"{r['temp'] / MIB:,.1f}" for r in rows) + " | "
                  + " / ".join(f"{r['compile_s']:.0f}" for r in rows) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

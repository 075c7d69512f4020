"""Serving artifact sizes of ShaResNet-152 vs ResNet-152, and how closely the reloaded artifact
(and the ONNX file) reproduce the live model's logits. docs/export.md quotes it.

    PYTHONPATH=. python benchmarks/export_sizes.py [--onnx] [--models=sharesnet152,resnet152]

No trained ImageNet run exists here, so the weights are random draws of the right shapes: every
parameter and BatchNorm statistic is a normal draw (a fresh init would hold constant BatchNorm
tensors, which StableHLO stores as one value each, and shrink the artifacts below a trained
model's). Sizes depend only on the shapes; the logits compared are those of these weights.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from sharesnet_jax import export, serving
from sharesnet_jax.errors import UserError
from sharesnet_jax.models import create_model
from sharesnet_jax.training.steps import normalize

MEAN, STD = (123.7, 116.3, 103.5), (58.4, 57.1, 57.4)  # ImageNet's, in pixel values
IMAGE_SHAPE = (224, 224, 3)


def random_variables(name: str, seed: int = 0) -> tuple[object, dict]:
    model = create_model(name, num_classes=1000)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *IMAGE_SHAPE)),
                                               train=False))
    paths_and_shapes = jax.tree_util.tree_leaves_with_path(shapes)
    keys = jax.random.split(jax.random.key(seed), len(paths_and_shapes))
    values = []
    for key, (path, shape) in zip(keys, paths_and_shapes):
        draw = jax.random.normal(key, shape.shape)
        # Variances must be positive; small draws elsewhere keep 152 layers' activations finite.
        is_variance = jax.tree_util.keystr(path).endswith("['var']")
        values.append(jnp.abs(draw) + 0.5 if is_variance else 0.05 * draw)
    return model, jax.tree.unflatten(jax.tree.structure(shapes), values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="sharesnet152,resnet152")
    parser.add_argument("--onnx", action="store_true", help="also convert to ONNX (slow)")
    args = parser.parse_args()
    images = np.random.RandomState(0).randint(0, 256, (3, *IMAGE_SHAPE)).astype(np.uint8)
    for name in args.models.split(","):
        model, variables = random_variables(name)
        num_values = sum(x.size for x in jax.tree.leaves(variables))

        def logits(x, model=model, variables=variables):
            return model.apply(variables, normalize(x, MEAN, STD), train=False)

        live = np.asarray(jax.jit(logits)(images))
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, f"{name}.jaxexport")
            start = time.time()
            exported = export.export_logits(logits, IMAGE_SHAPE, ("cpu",))
            serving.write(path, exported.serialize(), {
                "model": name, "image_shape": list(IMAGE_SHAPE), "eval_crop": "imagenet",
                "class_names": [str(i) for i in range(1000)], "mean": MEAN, "std": STD})
            seconds = time.time() - start
            size = os.path.getsize(path)
            served = serving.load(path)
            difference = max(float(np.abs(served.logits(images[:1]) - live[:1]).max()),
                             float(np.abs(served.logits(images) - live).max()))
            row = (f"{name}: {num_values:,} float32 values ({4 * num_values / 2**20:.1f} MiB), "
                   f"artifact {size:,} bytes ({size / 2**20:.1f} MiB, {seconds:.0f} s), "
                   f"reloaded logits max |diff| {difference:.2g} (batch 1 and 3)")
            print(row, flush=True)
            if args.onnx:
                from sharesnet_jax import onnx_export

                onnx_path = os.path.join(folder, f"{name}.onnx")
                start = time.time()
                try:
                    onnx_difference = onnx_export.write_onnx(onnx_path, logits, IMAGE_SHAPE,
                                                             {"model": name})
                except UserError as err:
                    print(f"{name}: ONNX: {err}", flush=True)
                    continue
                onnx_size = os.path.getsize(onnx_path)
                print(f"{name}: ONNX {onnx_size:,} bytes ({onnx_size / 2**20:.1f} MiB, "
                      f"{time.time() - start:.0f} s), onnxruntime logits max |diff| "
                      f"{onnx_difference:.2g} (batch 1 and 5)", flush=True)


if __name__ == "__main__":
    main()

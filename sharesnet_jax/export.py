"""Serving export of a trained run: its evaluation-mode classifier, weights embedded, as a file
that jax alone runs (`sharesnet_jax.serving`), and optionally as ONNX:

    python -m sharesnet_jax.export --workdir=W --out=model.jaxexport \\
        [--platforms=cpu,cuda,tpu] [--onnx=model.onnx]

The batch dimension is symbolic (any batch size). Inputs are NHWC pixel values 0..255 at the
run's input size; the run's mean/std normalisation is inside the model, its resize/crop is named
in the metadata (`eval_crop`) and done by `predict` for image files.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import export

from sharesnet_jax import cli, serving
from sharesnet_jax.errors import UserError, check_one_of

# jax.export's lowering platforms; any of them compiles on a CPU-only machine.
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def parse_platforms(text: str | None) -> tuple[str, ...]:
    """'cpu,cuda' -> ('cpu', 'cuda'); None -> the platform of this machine."""
    if text is None:
        return (jax.default_backend(),)
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    for name in names:
        check_one_of("--platforms", name, PLATFORMS, UserError)
    if not names or len(set(names)) != len(names):
        raise UserError(f"--platforms={text!r}: give each platform once, e.g. cpu,cuda,tpu")
    return names


def _check_writable(path: str, flag: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UserError(f"{flag}={path!r} is a directory: give a file name")
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise UserError(f"{flag}={path!r}: the folder {folder!r} does not exist or is not "
                        "writable")


def export_logits(logits: Callable[[jax.Array], jax.Array], image_shape: Sequence[int],
                  platforms: Sequence[str]) -> export.Exported:
    """`logits` (closing over its weights, which become constants of the module) for float32
    NHWC images of `image_shape` and any batch size."""
    batch, = export.symbolic_shape("batch")
    return export.export(jax.jit(logits), platforms=tuple(platforms))(
        jax.ShapeDtypeStruct((batch, *image_shape), jnp.float32))


def export_run(source: str, out: str, *, platforms: Sequence[str] | None = None,
               onnx_out: str | None = None) -> dict[str, Any]:
    """Exports the newest checkpoint of `source`; returns the metadata written (with
    'onnx_max_difference' when an ONNX file was written too). Bad flags fail before the
    checkpoint is read."""
    platforms = tuple(platforms) if platforms else parse_platforms(None)
    parse_platforms(",".join(platforms))
    _check_writable(out, "--out")
    if onnx_out is not None:
        _check_writable(onnx_out, "--onnx")
        from sharesnet_jax import onnx_export

        onnx_export.require_onnx()
    # flax, orbax: the exporting side only
    from sharesnet_jax.classifier import from_checkpoint
    from sharesnet_jax.models import model_spec

    classifier = from_checkpoint(source)
    record = classifier.record
    image_shape = record.image_shape
    exported = export_logits(classifier.logits, image_shape, platforms)
    config = record.config
    metadata = {
        "model": config["model"],
        "share": config["share"] or dict(model_spec(config["model"]).fields)["share"],
        "num_classes": record.num_classes, "class_names": list(record.class_names),
        "image_shape": list(image_shape), "mean": list(record.mean), "std": list(record.std),
        "eval_crop": record.augment, "dtype": config["dtype"],
        "trained_stage_impl": config["stage_impl"],
        "input": "images (batch, H, W, C) float32 pixel values 0..255, RGB, normalised inside",
        "output": "logits (batch, num_classes) float32",
        "checkpoint": record.checkpoint, "checkpoint_step": classifier.step,
        "platforms": list(platforms), "jax_version": jax.__version__,
    }
    metadata = serving.write(out, exported.serialize(), metadata)
    if onnx_out is not None:
        metadata = {**metadata, "onnx_max_difference": onnx_export.write_onnx(
            onnx_out, classifier.logits, image_shape, metadata)}
    return metadata


@cli.one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export a trained run's classifier for serving.")
    parser.add_argument("--workdir", required=True, help="a training workdir (or checkpoint)")
    parser.add_argument("--out", required=True, help="the jax.export artifact to write")
    parser.add_argument("--platforms", default=None,
                        help=f"comma-separated, of {','.join(PLATFORMS)} (default: this machine's)")
    parser.add_argument("--onnx", default=None, help="also write an ONNX file (onnx extra)")
    args = parser.parse_args(argv)
    platforms = parse_platforms(args.platforms)
    metadata = export_run(args.workdir, args.out, platforms=platforms, onnx_out=args.onnx)
    print(f"{args.out}: {metadata['model']}, step {metadata['checkpoint_step']}, "
          f"{os.path.getsize(args.out):,} bytes, platforms {','.join(platforms)}")
    if args.onnx is not None:
        print(f"{args.onnx}: {os.path.getsize(args.onnx):,} bytes, logits within "
              f"{metadata['onnx_max_difference']:.2g} of JAX's (onnxruntime, CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

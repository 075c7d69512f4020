"""Input-pipeline throughput (images/s, and per CPU core) of `sharesnet_jax.data.pipeline`.

    python benchmarks/input_pipeline.py
    python benchmarks/input_pipeline.py --cores 1 2 --batches 40 --imagenet-examples 4000

A CPU benchmark: it builds two datasets offline in a temporary directory with
`tfds.dataset_builders.store_as_tfds_dataset`, then times the real training stream,
`pipeline.train_batches(source, load_info(source), seed=0, local_batch_size=...)` (shuffle,
stateless augmentation, batching, prefetch, numpy conversion), on each:

* CIFAR-like: 32x32x3 random uint8 images, stored as TFDS stores CIFAR (PNG), 10 classes; the
  'cifar' augmentation (reflect-pad 4, random 32x32 crop, flip) after TFDS decodes the PNG.
* ImageNet-like: JPEG files (quality 90) of smooth random images of varying sizes around
  400x350, 1000 classes; the feature is `tfds.features.Image(encoding_format='jpeg')`, so the
  pipeline takes its JPEG path (checked: `sources.is_jpeg`): the bytes skip TFDS
  decoding and `decode_and_crop_jpeg` decodes only the random-resized-crop window, then the
  crop is resized to 224x224 and flipped.

Each `--cores` setting runs in its own process pinned to that many cores (sched_setaffinity,
before TensorFlow starts, so tf.data's AUTOTUNE sees only those). The first `--warmup-batches`
(which fill the shuffle buffer) are not timed; then `--batches` batches are. Random noise
compresses worse than photographs, so the JPEGs are smoothed to sizes nearer ImageNet's
(about 110 KB on average at about 400x350); the table gives their mean size.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SCRIPT = "benchmarks/input_pipeline.py"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)

CIFAR_NAME = "bench_cifar_like"
IMAGENET_NAME = "bench_imagenet_like"
VERSION = "1.0.0"
RESULT_PREFIX = "PIPELINE_RESULT "


# ---------------------------------------------------------------------------------------------
# Datasets, written offline.


def write_cifar_like(data_dir: str, num_examples: int, seed: int = 0) -> None:
    import tensorflow as tf
    import tensorflow_datasets as tfds

    rng = np.random.default_rng(seed)

    def split(n):
        return tf.data.Dataset.from_tensor_slices({
            "image": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
            "label": rng.integers(0, 10, (n,), dtype=np.int64),
        })

    tfds.dataset_builders.store_as_tfds_dataset(
        name=CIFAR_NAME, version=VERSION, data_dir=data_dir,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(32, 32, 3)),  # PNG, as TFDS stores CIFAR
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        split_datasets={"train": split(num_examples), "test": split(256)})


def smooth_random_jpeg(rng: np.random.Generator, height: int, width: int,
                       quality: int = 90) -> bytes:
    """A JPEG of a smooth random picture plus mild noise (nearer a photo's size than noise)."""
    from PIL import Image

    coarse = rng.integers(0, 256, (height // 24 + 2, width // 24 + 2, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR),
                        np.float32)
    noisy = np.clip(smooth + rng.normal(0.0, 30.0, smooth.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_imagenet_like(data_dir: str, num_examples: int, seed: int = 0) -> float:
    """Returns the mean JPEG size in bytes."""
    import tensorflow_datasets as tfds

    rng = np.random.default_rng(seed)
    sizes = []

    def examples(n, offset):
        for index in range(n):
            height = int(rng.integers(263, 438))  # mean 350
            width = int(rng.integers(300, 501))  # mean 400
            jpeg = smooth_random_jpeg(rng, height, width)
            sizes.append(len(jpeg))
            yield offset + index, {"image": jpeg, "label": int(rng.integers(0, 1000))}

    tfds.dataset_builders.store_as_tfds_dataset(
        name=IMAGENET_NAME, version=VERSION, data_dir=data_dir,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(num_classes=1000),
        }),
        split_datasets={"train": list(examples(num_examples, 0)),
                        "validation": list(examples(64, num_examples))})
    return float(np.mean(sizes))


# ---------------------------------------------------------------------------------------------
# One measurement (in a worker pinned to some cores).


def measure(name: str, data_dir: str, batch: int, warmup_batches: int, batches: int,
            shuffle_buffer: int) -> dict:
    from sharesnet_jax.data import pipeline, sources

    source = sources.open_source(name, data_dir)
    info = pipeline.load_info(source)
    jpeg_path = info.augment == "imagenet" and sources.is_jpeg(source)
    start = time.perf_counter()
    stream = pipeline.train_batches(source, info, seed=0, local_batch_size=batch,
                                    shuffle_buffer=shuffle_buffer)
    for _ in range(warmup_batches):
        first = next(stream)
    warm = time.perf_counter()
    for _ in range(batches):
        last = next(stream)
    end = time.perf_counter()
    assert first["image"].dtype == np.uint8 and last["image"].shape == (batch, *info.image_shape)
    return {"augment": info.augment, "jpeg_path": bool(jpeg_path),
            "image_shape": list(info.image_shape), "warmup_s": warm - start,
            "images_per_s": batches * batch / (end - warm)}


def worker_main(spec: dict) -> int:
    cores = spec["cores"]
    available = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, set(available[:cores]))  # before TensorFlow sizes its thread pools
    import tensorflow as tf  # noqa: F401

    results = {name: measure(name, spec["data_dir"], spec["batch"], spec["warmup_batches"],
                             spec["batches"], spec["shuffle_buffer"])
               for name in spec["datasets"]}
    results["versions"] = {"tensorflow": tf.__version__}
    print(RESULT_PREFIX + json.dumps(results), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    available = len(os.sched_getaffinity(0))
    parser.add_argument("--cores", type=int, nargs="+", default=sorted({1, available}),
                        help=f"core counts to pin to (default 1 and all {available})")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per dataset")
    parser.add_argument("--warmup-batches", type=int, default=3)
    parser.add_argument("--cifar-examples", type=int, default=10_000)
    parser.add_argument("--imagenet-examples", type=int, default=2_000)
    parser.add_argument("--shuffle-buffer", type=int, default=10_000)
    parser.add_argument("--data-dir", default=None,
                        help="keep the datasets here (default: a temporary directory, removed)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(json.loads(args.worker))

    import tensorflow as tf
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging

    tfds.disable_progress_bar()
    absl_logging.set_verbosity(absl_logging.ERROR)
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="sharesnet_pipeline_bench_")
    try:
        start = time.perf_counter()
        jpeg_bytes = None
        with contextlib.redirect_stdout(sys.stderr):  # TFDS prints as it prepares
            if not os.path.isdir(os.path.join(data_dir, CIFAR_NAME)):
                write_cifar_like(data_dir, args.cifar_examples)
            if not os.path.isdir(os.path.join(data_dir, IMAGENET_NAME)):
                jpeg_bytes = write_imagenet_like(data_dir, args.imagenet_examples)
        print(f"datasets written in {time.perf_counter() - start:.0f} s to {data_dir}",
              file=sys.stderr, flush=True)

        runs = []
        for cores in args.cores:
            if not 1 <= cores <= available:
                parser.error(f"--cores {cores}: this process may use 1..{available} cores")
            spec = dict(cores=cores, data_dir=data_dir, batch=args.batch,
                        warmup_batches=args.warmup_batches, batches=args.batches,
                        shuffle_buffer=args.shuffle_buffer, datasets=[CIFAR_NAME, IMAGENET_NAME])
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker",
                                   json.dumps(spec)], capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
            if done.returncode or not lines:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            runs.append((cores, json.loads(lines[-1][len(RESULT_PREFIX):])))
    finally:
        if not args.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)

    import jax  # versions only; the pipeline itself never touches JAX

    from common import cpu_model, markdown_table  # noqa: PLC0415

    describe = {
        CIFAR_NAME: ("CIFAR-like", f"{args.cifar_examples:,} x 32x32 PNG",
                     "TFDS PNG decode, pad 4 + random crop + flip"),
        IMAGENET_NAME: ("ImageNet-like", f"{args.imagenet_examples:,} JPEGs ~400x350"
                        + (f", mean {jpeg_bytes / 1e3:.0f} KB" if jpeg_bytes else ""),
                        "decode_and_crop_jpeg (crop window only) + resize + flip"),
    }
    rows = []
    for cores, result in runs:
        for name in (CIFAR_NAME, IMAGENET_NAME):
            r = result[name]
            label, source, path = describe[name]
            if name == IMAGENET_NAME and not r["jpeg_path"]:
                path = "NOT the JPEG path (decoded by TFDS first)"
            rows.append([label, source, path, "x".join(map(str, r["image_shape"])), cores,
                         args.batch, f"{r['images_per_s']:,.0f}",
                         f"{r['images_per_s'] / cores:,.0f}", f"{r['warmup_s']:.1f}"])
    print(f"command: python {SCRIPT} {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"machine: {cpu_model()}, {available} cores available (load average "
          f"{os.getloadavg()[0]:.1f}); python "
          f"{sys.version.split()[0]}, tensorflow {tf.__version__}, tensorflow-datasets "
          f"{tfds.__version__}, jax {jax.__version__} (device kind "
          f"{jax.devices()[0].device_kind}, {jax.device_count()} device(s): not used)")
    print(f"sharesnet_jax.data.pipeline.train_batches, uint8 batches to numpy; "
          f"{args.batches} timed batches after {args.warmup_batches} warm-up")
    print()
    print(markdown_table(["data", "stored", "decode + augment", "output", "cores", "batch",
                          "images/s", "images/s per core", "first batches (s)"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

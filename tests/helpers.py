"""Small configs shared by the trainer tests: tiny models, few steps, everything offline."""

import json
import pathlib

import ml_collections

from sharesnet_jax.training.config import base_config

ROOT = pathlib.Path(__file__).resolve().parents[1]  # the repository


def tiny_config(**fields) -> ml_collections.ConfigDict:
    c = base_config()
    c.model = "cifar_sharesnet20"  # n=3: each shared kernel has two uses
    c.dataset = "digits"
    c.batch_size = 32
    c.eval_batch_size = 64
    c.num_train_steps = 4
    c.learning_rate, c.learning_rate_batch_size = 0.05, 32
    c.schedule = "constant"
    c.log_every_steps = 2
    c.checkpoint_every_steps = 2
    c.shuffle_buffer = 2048
    for key, value in fields.items():
        c[key] = value
    return c


# Config fields the trainer's first records (28 Nov 2026) did not hold: added since, read back
# with the schema's defaults. `remat` (the boolean of then) stays.
ADDED_SINCE_THE_FIRST_RECORDS = ("remat_policy", "stage_impl", "bn_group_size", "dropout_rate",
                                 "grad_reduce_dtype", "skip_nonfinite", "eval_only")


def as_first_records(workdir: pathlib.Path) -> None:
    """Rewrites the record of every checkpoint of `workdir` as the first version wrote it:
    without the devices and without the config fields added since."""
    def older(record: dict) -> dict:
        del record["num_devices"], record["num_processes"]
        for field in ADDED_SINCE_THE_FIRST_RECORDS:
            del record["config"][field]
        return record
    rewrite_records(workdir, older)


def rewrite_records(workdir: pathlib.Path, change) -> list[pathlib.Path]:
    """The JSON record of every checkpoint of `workdir` replaced by `change(record)`; the files
    rewritten."""
    files = sorted((workdir / "checkpoints").glob("*/record/metadata"),
                   key=lambda path: int(path.parent.parent.name))  # oldest step first
    assert files, f"no record under {workdir}"
    for path in files:
        record = json.loads(path.read_text())
        path.write_text(json.dumps(change(record)))
    return files


def write_tiny_tfds_dataset(data_dir, name: str, split_sizes: dict[str, int], *,
                            image_sizes: tuple[int, int] = (24, 72), seed: int = 0) -> str:
    """Writes a real, prepared TFDS dataset `name` into `data_dir` and returns `data_dir`.

    `name` is a registered TFDS builder ('cifar10', 'imagenet2012', ...): the files carry its own
    version and features (JPEG for ImageNet, its 1000 ClassLabel names), so
    `tfds.builder(name, data_dir=...)` opens it like the real prepared dataset, only with
    `split_sizes` random examples; variable-size images are drawn between `image_sizes`.
    """
    import numpy as np
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=str(data_dir))
    features = builder.info.features
    rng = np.random.default_rng(seed)

    def example(index: int) -> dict:
        values = {}
        for key, feature in features.items():
            if isinstance(feature, tfds.features.Image):
                height, width = (size or int(rng.integers(*image_sizes))
                                 for size in feature.shape[:2])
                values[key] = rng.integers(0, 256, (height, width, feature.shape[2]), np.uint8)
            elif isinstance(feature, tfds.features.ClassLabel):
                values[key] = int(rng.integers(feature.num_classes))
            else:  # a Text id or file name
                values[key] = f"{key}-{index}"
        return values

    first = 0
    split_datasets = {}
    for split, size in split_sizes.items():
        split_datasets[split] = [(key, example(key)) for key in range(first, first + size)]
        first += size
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version=str(builder.version), features=features,
        split_datasets=split_datasets, data_dir=str(data_dir))
    return str(data_dir)

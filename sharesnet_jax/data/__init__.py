"""The data layer: the only code that imports TensorFlow and TFDS.

`info` (what a dataset is: shapes, sizes, step counts) and `synthetic` (on-device random batches)
are free of TensorFlow, so the trainer and the benchmarks can use them on machines without it.
`sources` opens TFDS datasets, `augment` holds the image transformations, `pipeline` builds the
resumable training stream and the padded evaluation stream, and `digits` writes the embedded
offline dataset.
"""


def hide_accelerators_from_tensorflow() -> None:
    """JAX owns the accelerators; TF (the input pipeline only) must not reserve their memory."""
    try:
        import tensorflow as tf
    except ImportError:
        return
    for device_type in ("GPU", "TPU"):
        try:
            tf.config.set_visible_devices([], device_type)
        except (RuntimeError, ValueError):  # TF already initialised, or no such device type.
            pass

"""Throughput on synthetic data generated on the device: no dataset, no input pipeline.

    python -m sharesnet_jax.main --config=configs/synthetic_benchmark.py --workdir=/tmp/bench \
        --config.model=sharesnet50 --config.batch_size=256

Measures the train step alone (steps/s in the log, `steps_per_sec` in TensorBoard); accuracy is
meaningless here.
Parameters: 25,557,032 (the default resnet50; --config.model picks another).
"""

from sharesnet_jax.training.recipes import imagenet_recipe


def get_config():
    c = imagenet_recipe("resnet50")
    c.dataset = "synthetic"
    c.image_size = 224
    c.num_classes = 1000
    c.dtype = "bfloat16"
    c.num_train_steps = 300
    c.log_every_steps = 50
    c.eval_every_epochs = 1000
    c.checkpoint_every_steps = 100_000
    return c

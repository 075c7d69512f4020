"""wrn40_4 on cifar10: the unshared baseline.

    python -m sharesnet_jax.main --config=configs/cifar10_wrn40_4.py --workdir=/tmp/cifar10_wrn40_4

Parameters: 8,949,210. Paper's result: 4.17% test error.
Recipe: SGD + Nesterov 0.9, batch 128, lr 0.1 x0.2 at epochs 60/120/160, 200 epochs,
weight decay 5e-4, pad-4 random crop + flip.
Prepare once: python -c "import tensorflow_datasets as tfds; tfds.builder('cifar10').download_and_prepare()"
"""

from sharesnet_jax.recipes import cifar_recipe


def get_config():
    return cifar_recipe("wrn40_4", "cifar10")

"""cifar_sharesnet164 on cifar10: ShaResNet (3x3 kernels shared per stage, the paper's rule).

    python -m sharesnet_jax.main --config=configs/cifar10_sharesnet164.py --workdir=/tmp/cifar10_sharesnet164

Parameters: 929,114. Paper's result: 6.2% test error.
Recipe: SGD + Nesterov 0.9, batch 128, lr 0.1 x0.2 at epochs 60/120/160, 200 epochs,
weight decay 5e-4, pad-4 random crop + flip.
Prepare once: python -c "import tensorflow_datasets as tfds; tfds.builder('cifar10').download_and_prepare()"
"""

from sharesnet_jax.recipes import cifar_recipe


def get_config():
    return cifar_recipe("cifar_sharesnet164", "cifar10")

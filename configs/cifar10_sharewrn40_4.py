"""sharewrn40_4 on cifar10: ShaResNet (3x3 kernels shared per stage, the paper's rule).

    python -m sharesnet_jax.main --config=configs/cifar10_sharewrn40_4.py --workdir=/tmp/cifar10_sharewrn40_4

Parameters: 5,852,634. Paper's result: 5.1% test error.
Recipe: SGD + Nesterov 0.9, batch 128, lr 0.1 x0.2 at epochs 60/120/160, 200 epochs,
weight decay 5e-4, pad-4 random crop + flip.
Prepare once: python -c "import tensorflow_datasets as tfds; tfds.builder('cifar10').download_and_prepare()"
"""

from sharesnet_jax.recipes import cifar_recipe


def get_config():
    return cifar_recipe("sharewrn40_4", "cifar10")

"""cifar_sharesnet164 on cifar10: ShaResNet (3x3 kernels shared per stage, the paper's rule).

    python -m sharesnet_jax.main --config=configs/cifar10_sharesnet164.py --workdir=/tmp/cifar10_sharesnet164

Parameters: 929,114.
Paper's figure: 6.2% test error, the author's own run (the Wide ResNet Torch code, this recipe;
seeds and median-or-best not stated).
Recipe: sharesnet_jax.training.recipes.cifar_recipe. Preparing the data: README, "Data".
"""

from sharesnet_jax.training.recipes import cifar_recipe


def get_config():
    return cifar_recipe("cifar_sharesnet164", "cifar10")

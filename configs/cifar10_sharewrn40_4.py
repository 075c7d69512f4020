"""sharewrn40_4 on cifar10: ShaResNet (3x3 kernels shared per stage, the paper's rule).

    python -m sharesnet_jax.main --config=configs/cifar10_sharewrn40_4.py --workdir=/tmp/cifar10_sharewrn40_4

Parameters: 5,852,634.
Paper's figure: 5.1% test error, the author's own run (the Wide ResNet Torch code, this recipe;
seeds and median-or-best not stated).
Recipe: sharesnet_jax.training.recipes.cifar_recipe. Preparing the data: README, "Data".
"""

from sharesnet_jax.training.recipes import cifar_recipe


def get_config():
    return cifar_recipe("sharewrn40_4", "cifar10")

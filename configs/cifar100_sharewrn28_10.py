"""sharewrn28_10 on cifar100: ShaResNet (3x3 kernels shared per stage, the paper's rule).

    python -m sharesnet_jax.main --config=configs/cifar100_sharewrn28_10.py --workdir=/tmp/cifar100_sharewrn28_10

Parameters: 26,860,084. Paper's result: 20.2% test error.
Recipe: sharesnet_jax.training.recipes.cifar_recipe. Preparing the data: README, "Data".
"""

from sharesnet_jax.training.recipes import cifar_recipe


def get_config():
    return cifar_recipe("sharewrn28_10", "cifar100", dropout_rate=0.3)

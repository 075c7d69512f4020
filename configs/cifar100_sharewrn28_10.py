"""sharewrn28_10 on cifar100: ShaResNet (3x3 kernels shared per stage, the paper's rule).

    python -m sharesnet_jax.main --config=configs/cifar100_sharewrn28_10.py --workdir=/tmp/cifar100_sharewrn28_10

Parameters: 26,860,084.
Paper's figure: 20.2% test error, the author's own run (the Wide ResNet Torch code, this recipe
with dropout 0.3; seeds and median-or-best not stated).
Recipe: sharesnet_jax.training.recipes.cifar_recipe. Preparing the data: README, "Data".
"""

from sharesnet_jax.training.recipes import cifar_recipe


def get_config():
    return cifar_recipe("sharewrn28_10", "cifar100", dropout_rate=0.3)

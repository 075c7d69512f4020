"""wrn40_4 on cifar10: the unshared baseline.

    python -m sharesnet_jax.main --config=configs/cifar10_wrn40_4.py --workdir=/tmp/cifar10_wrn40_4

Parameters: 8,949,210. Paper's result: 4.17% test error.
Recipe: sharesnet_jax.training.recipes.cifar_recipe. Preparing the data: README, "Data".
"""

from sharesnet_jax.training.recipes import cifar_recipe


def get_config():
    return cifar_recipe("wrn40_4", "cifar10")

"""cifar_resnet164 on cifar10: the unshared baseline.

    python -m sharesnet_jax.main --config=configs/cifar10_resnet164.py --workdir=/tmp/cifar10_resnet164

Parameters: 1,703,258. Paper's result: 5.46% test error.
Recipe: sharesnet_jax.training.recipes.cifar_recipe. Preparing the data: README, "Data".
"""

from sharesnet_jax.training.recipes import cifar_recipe


def get_config():
    return cifar_recipe("cifar_resnet164", "cifar10")

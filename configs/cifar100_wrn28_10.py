"""wrn28_10 on cifar100: the unshared baseline.

    python -m sharesnet_jax.main --config=configs/cifar100_wrn28_10.py --workdir=/tmp/cifar100_wrn28_10

Parameters: 36,536,884.
Paper's figure: 20.0% test error, quoted from the Wide ResNet README (its code and recipe,
dropout 0.3, on whitened data); not the author's run.
Recipe: sharesnet_jax.training.recipes.cifar_recipe. Preparing the data: README, "Data".
"""

from sharesnet_jax.training.recipes import cifar_recipe


def get_config():
    return cifar_recipe("wrn28_10", "cifar100", dropout_rate=0.3)

"""wrn40_4 on cifar10: the unshared baseline.

    python -m sharesnet_jax.main --config=configs/cifar10_wrn40_4.py --workdir=/tmp/cifar10_wrn40_4

Parameters: 8,949,210.
Paper's figure: 4.17% test error as the author printed it for WRN-40-4; the Wide ResNet paper
gives 4.17% for WRN-28-10, so this baseline is probably a transcription slip (not the author's run).
Recipe: sharesnet_jax.training.recipes.cifar_recipe. Preparing the data: README, "Data".
"""

from sharesnet_jax.training.recipes import cifar_recipe


def get_config():
    return cifar_recipe("wrn40_4", "cifar10")

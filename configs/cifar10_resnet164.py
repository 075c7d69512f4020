"""cifar_resnet164 on cifar10: the unshared baseline.

    python -m sharesnet_jax.main --config=configs/cifar10_resnet164.py --workdir=/tmp/cifar10_resnet164

Parameters: 1,703,258.
Paper's figure: 5.46% test error, quoted by the author from He et al. (2016, pre-activation
ResNet-164, their own recipe: batch 128, lr 0.1 /10 at 32k and 48k iterations), as the Wide
ResNet README also lists it; not a run of this recipe.
Recipe: sharesnet_jax.training.recipes.cifar_recipe. Preparing the data: README, "Data".
"""

from sharesnet_jax.training.recipes import cifar_recipe


def get_config():
    return cifar_recipe("cifar_resnet164", "cifar10")

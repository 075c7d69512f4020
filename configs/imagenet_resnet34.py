"""resnet34 on imagenet2012: the unshared baseline.

    python -m sharesnet_jax.main --config=configs/imagenet_resnet34.py --workdir=/tmp/imagenet_resnet34

Parameters: 21,797,672. Paper's result: 26.73% top-1 / 8.74% top-5 error.
Recipe: sharesnet_jax.training.recipes.imagenet_recipe. Preparing the data: README, "Data".
"""

from sharesnet_jax.training.recipes import imagenet_recipe


def get_config():
    return imagenet_recipe("resnet34")

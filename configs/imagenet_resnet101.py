"""resnet101 on imagenet2012: the unshared baseline.

    python -m sharesnet_jax.main --config=configs/imagenet_resnet101.py --workdir=/tmp/imagenet_resnet101

Parameters: 44,549,160. Paper's result: 22.44% top-1 / 6.21% top-5 error.
Recipe: sharesnet_jax.training.recipes.imagenet_recipe. Preparing the data: README, "Data".
"""

from sharesnet_jax.training.recipes import imagenet_recipe


def get_config():
    return imagenet_recipe("resnet101")

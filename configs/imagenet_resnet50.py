"""resnet50 on imagenet2012: the unshared baseline.

    python -m sharesnet_jax.main --config=configs/imagenet_resnet50.py --workdir=/tmp/imagenet_resnet50

Parameters: 25,557,032. Paper's result: 24.01% top-1 / 7.02% top-5 error.
Recipe: sharesnet_jax.training.recipes.imagenet_recipe. Preparing the data: README, "Data".
"""

from sharesnet_jax.training.recipes import imagenet_recipe


def get_config():
    return imagenet_recipe("resnet50")

"""resnet34 on imagenet2012: the unshared baseline.

    python -m sharesnet_jax.main --config=configs/imagenet_resnet34.py --workdir=/tmp/imagenet_resnet34

Parameters: 21,797,672.
Paper's figure: 26.73% top-1 / 8.74% top-5 error (single 224 centre crop), fb.resnet.torch's
released model as its README lists it (this recipe); not the author's run.
Recipe: sharesnet_jax.training.recipes.imagenet_recipe. Preparing the data: README, "Data".
"""

from sharesnet_jax.training.recipes import imagenet_recipe


def get_config():
    return imagenet_recipe("resnet34")

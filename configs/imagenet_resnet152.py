"""resnet152 on imagenet2012: the unshared baseline.

    python -m sharesnet_jax.main --config=configs/imagenet_resnet152.py --workdir=/tmp/imagenet_resnet152

Parameters: 60,192,808.
Paper's figure: 22.16% top-1 / 6.16% top-5 error (single 224 centre crop), fb.resnet.torch's
released model as its README lists it (this recipe); not the author's run.
Recipe: sharesnet_jax.training.recipes.imagenet_recipe. Preparing the data: README, "Data".
"""

from sharesnet_jax.training.recipes import imagenet_recipe


def get_config():
    return imagenet_recipe("resnet152")

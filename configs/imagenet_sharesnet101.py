"""sharesnet101 on imagenet2012: ShaResNet (3x3 kernels shared per stage, the paper's rule).

    python -m sharesnet_jax.main --config=configs/imagenet_sharesnet101.py --workdir=/tmp/imagenet_sharesnet101

Parameters: 29,434,920.
Paper's figure: 22.91% top-1 / 6.55% top-5 error (single 224 centre crop), the author's own
run with fb.resnet.torch (this recipe; trained "exactly in the same fashion" as the ResNets).
Recipe: sharesnet_jax.training.recipes.imagenet_recipe. Preparing the data: README, "Data".
"""

from sharesnet_jax.training.recipes import imagenet_recipe


def get_config():
    return imagenet_recipe("sharesnet101")

"""sharesnet152 on imagenet2012: ShaResNet (3x3 kernels shared per stage, the paper's rule).

    python -m sharesnet_jax.main --config=configs/imagenet_sharesnet152.py --workdir=/tmp/imagenet_sharesnet152

Parameters: 36,821,032. Paper's result: 22.23% top-1 / 6.14% top-5 error.
Recipe (fb.resnet.torch): SGD + Nesterov 0.9, lr 0.1 per 256 images (scaled linearly with
--config.batch_size), /10 at epochs 30 and 60, 90 epochs, weight decay 1e-4, random-resized
crop 224 + flip; evaluation resize 256, center crop 224.
Prepare once: put ILSVRC2012_img_{train,val}.tar in ~/tensorflow_datasets/downloads/manual,
then python -c "import tensorflow_datasets as tfds; tfds.builder('imagenet2012').download_and_prepare()"
"""

from sharesnet_jax.recipes import imagenet_recipe


def get_config():
    return imagenet_recipe("sharesnet152")

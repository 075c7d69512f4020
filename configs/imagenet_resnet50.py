"""resnet50 on imagenet2012: the unshared baseline.

    python -m sharesnet_jax.main --config=configs/imagenet_resnet50.py --workdir=/tmp/imagenet_resnet50

Parameters: 25,557,032. Paper's result: 24.01% top-1 / 7.02% top-5 error.
Recipe (fb.resnet.torch): SGD + Nesterov 0.9, lr 0.1 per 256 images (scaled linearly with
--config.batch_size), /10 at epochs 30 and 60, 90 epochs, weight decay 1e-4, random-resized
crop 224 + flip; evaluation resize 256, center crop 224.
Prepare once: put ILSVRC2012_img_{train,val}.tar in ~/tensorflow_datasets/downloads/manual,
then python -c "import tensorflow_datasets as tfds; tfds.builder('imagenet2012').download_and_prepare()"
"""

from sharesnet_jax.recipes import imagenet_recipe


def get_config():
    return imagenet_recipe("resnet50")

"""wrn28_10 on cifar100: the unshared baseline.

    python -m sharesnet_jax.main --config=configs/cifar100_wrn28_10.py --workdir=/tmp/cifar100_wrn28_10

Parameters: 36,536,884. Paper's result: 20.0% test error.
Recipe: SGD + Nesterov 0.9, batch 128, lr 0.1 x0.2 at epochs 60/120/160, 200 epochs,
weight decay 5e-4, pad-4 random crop + flip, dropout 0.3.
Prepare once: python -c "import tensorflow_datasets as tfds; tfds.builder('cifar100').download_and_prepare()"
"""

from sharesnet_jax.recipes import cifar_recipe


def get_config():
    return cifar_recipe("wrn28_10", "cifar100", dropout_rate=0.3)

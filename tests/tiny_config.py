"""The tiny config of the tests, as a config file for the command line (subprocess tests).

    python -m sharesnet_jax.main --config=tests/tiny_config.py --workdir=/tmp/tiny
"""

from tests.helpers import tiny_config


def get_config():
    return tiny_config()

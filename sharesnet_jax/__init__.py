"""ShaResNet in JAX/Flax: residual networks whose stages share one 3x3 convolution.

Importing the package (and `sharesnet_jax.models`) needs jax, flax and numpy only, so the models
run on machines that have no TensorFlow; the trainer imports its TF-based pieces lazily.
"""

__version__ = "0.1.0"

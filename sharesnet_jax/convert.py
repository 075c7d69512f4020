"""Weight conversion, as the README shows it: torchvision ResNets <-> our Flax ResNets, and
trained nets -> ShaResNets. The code lives in `sharesnet_jax.interop`."""

from sharesnet_jax.interop.shareify import ShareReport, StageShare, relative_distance, shareify
from sharesnet_jax.interop.torchvision import from_torchvision, to_torchvision

__all__ = ["ShareReport", "StageShare", "from_torchvision", "relative_distance", "shareify",
           "to_torchvision"]

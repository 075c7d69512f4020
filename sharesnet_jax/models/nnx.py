"""Our Linen models from Flax NNX code, with no second copy of the networks.

`ShaResNetNNX` holds a registered Linen model behind `flax.nnx.bridge.ToNNX` and the variables
it is given (a fresh `model.init`, a checkpoint's, a torchvision conversion's) exactly: NNX's
own key splitting never re-draws them, because `init` initialises with the Linen key itself and
`from_variables` copies arrays. Because a stage OWNS its shared 3x3 kernel and hands it to its
blocks as an array (`models/__init__.py`), the kernel is one `nnx.Param` per stage in
`nnx.state(model)`, the pattern NNX's "tree mode" (no two modules holding one Param) keeps.

Two things the plain bridge leaves to the caller, done here: training-mode BatchNorm must be
applied with `mutable=['batch_stats']` (the bridge's default is immutable), and the model's
`train` flag is a keyword of `__call__`.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
from flax import nnx, traverse_util

# Linen collection <-> NNX variable type, for every collection our models create.
COLLECTIONS = {"params": nnx.Param, "batch_stats": nnx.BatchStat}


class ShaResNetNNX(nnx.Module):
    """A Linen ResNet/ShaResNet as an NNX module: `model(images, train=...)` -> float32 logits.

    In training mode the BatchNorm statistics update in place (NNX style) and dropout, where
    the model has some, draws from `rngs`' 'dropout' stream.
    """

    def __init__(self, model: nn.Module, sample_images: jax.Array, key: jax.Array,
                 *, rngs: nnx.Rngs | None = None):
        """Initialises exactly as `model.init(key, sample_images, train=False)` does."""
        self.net = nnx.bridge.ToNNX(model, rngs=rngs)
        nnx.bridge.lazy_init(self.net, sample_images, train=False, rngs=key)

    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        return self.net(images, train=train, mutable=["batch_stats"] if train else False)

    @classmethod
    def from_variables(cls, model: nn.Module, variables: Mapping[str, Any],
                       sample_images: jax.Array, *,
                       rngs: nnx.Rngs | None = None) -> "ShaResNetNNX":
        """An NNX module holding `variables` (Linen's {'params', 'batch_stats'}) as they are; a
        tree of another model (missing, extra or differently shaped entries) is a ValueError
        naming the first differing path, raised before any array is computed."""
        wanted = jax.eval_shape(lambda: model.init(jax.random.key(0), sample_images, train=False))
        given = {collection: variables.get(collection, {}) for collection in wanted}
        _check_same_tree(wanted, given)
        net = cls(model, sample_images, jax.random.key(0), rngs=rngs)
        # The bridge keeps both collections in one tree of module names, so one update sets both.
        flat = {path: value for collection in given
                for path, value in traverse_util.flatten_dict(given[collection]).items()}
        nnx.update(net.net, nnx.State.from_flat_path(flat))
        return net


def linen_variables(model: ShaResNetNNX) -> dict[str, dict]:
    """The NNX module's variables as Linen's nested dicts (what `model.apply` takes)."""
    out: dict[str, dict] = {}
    for collection, kind in COLLECTIONS.items():
        flat = {tuple(path[1:]): variable.get_value()
                for path, variable in nnx.state(model, kind).flat_state() if path[0] == "net"}
        if flat:
            out[collection] = traverse_util.unflatten_dict(flat)
    return out


def num_params(model: ShaResNetNNX) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _check_same_tree(wanted: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    flat_wanted = traverse_util.flatten_dict(wanted, sep="/")
    flat_given = traverse_util.flatten_dict(given, sep="/")
    for path in sorted(flat_wanted.keys() | flat_given.keys()):
        if path not in flat_given:
            raise ValueError(f"variables lack {path}: they belong to another model")
        if path not in flat_wanted:
            raise ValueError(f"variables hold {path}, which this model does not have")
        if tuple(flat_wanted[path].shape) != tuple(flat_given[path].shape):
            raise ValueError(f"variables hold {path} with shape {tuple(flat_given[path].shape)}, "
                             f"this model needs {tuple(flat_wanted[path].shape)}")

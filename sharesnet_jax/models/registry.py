"""Named models: the paper's networks and their shared twins, and the facts of each family.

Every fact about a family that tools outside the model need (its input size, its number of
classes by default, the smallest input it can take, how its training data is augmented) is stated
once here, in `FAMILIES`, and read through `model_spec(name)` by validation, the parameter CLI,
prediction, the planner and the benchmarks.
"""

from __future__ import annotations

import dataclasses
import difflib

import flax.linen as nn

from sharesnet_jax.models.blocks import BasicBlock, Bottleneck, PreActBasic, PreActBottleneck
from sharesnet_jax.models.initialization import FB_RESNET_TORCH, WIDE_RESNET_TORCH, Initialization
from sharesnet_jax.models.resnets import PreActResNet, ResNet


@dataclasses.dataclass(frozen=True)
class FamilySpec:
    """What a model family expects of its data, stated once."""

    name: str
    network: type
    block: type
    image_size: int  # the input the paper trained and measured it at
    num_classes: int  # the dataset it is usually trained on
    min_image_size: int  # below its total downsampling the last stage sees only padding
    augment: str  # training augmentation style of its recipe ('cifar' or 'imagenet')
    initialization: Initialization  # that of the Torch code that trained it


FAMILIES = {
    spec.name: spec for spec in (
        FamilySpec("cifar_basic", PreActResNet, PreActBasic, 32, 10, 4, "cifar",
                   WIDE_RESNET_TORCH),
        FamilySpec("cifar_bottleneck", PreActResNet, PreActBottleneck, 32, 10, 4, "cifar",
                   WIDE_RESNET_TORCH),
        FamilySpec("imagenet_basic", ResNet, BasicBlock, 224, 1000, 32, "imagenet",
                   FB_RESNET_TORCH),
        FamilySpec("imagenet_bottleneck", ResNet, Bottleneck, 224, 1000, 32, "imagenet",
                   FB_RESNET_TORCH),
    )
}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered model: its family and the module fields that make it."""

    name: str
    family: FamilySpec
    fields: tuple[tuple[str, object], ...]

    def build(self, **fields) -> nn.Module:
        return self.family.network(block_cls=self.family.block, **{
            "initialization": self.family.initialization, **dict(self.fields), **fields})


_REGISTRY: dict[str, ModelSpec] = {}


def _register_pair(plain: str, shared: str, family: str, **fields) -> None:
    """Every network comes with its ShaResNet twin: same fields, share='paper'."""
    for name, share in ((plain, "none"), (shared, "paper")):
        _REGISTRY[name] = ModelSpec(name, FAMILIES[family],
                                    tuple(sorted({**fields, "share": share}.items())))


# CIFAR pre-activation basic ResNets, depth 6n+2: 3x3 widths 16, 32, 64.
for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register_pair(f"cifar_resnet{_depth}", f"cifar_sharesnet{_depth}", "cifar_basic",
                   stage_sizes=((_depth - 2) // 6,) * 3, stage_features=(16, 32, 64))

# CIFAR pre-activation bottleneck ResNets, depth 9n+2: 3x3 widths 16, 32, 64, outputs 4x.
for _depth in (164, 1001):
    _register_pair(f"cifar_resnet{_depth}", f"cifar_sharesnet{_depth}", "cifar_bottleneck",
                   stage_sizes=((_depth - 2) // 9,) * 3, stage_features=(16, 32, 64))

# Wide ResNets WRN-d-k: n = (d-4)/6 blocks per stage at widths 16k, 32k, 64k.
for _depth, _k in ((16, 4), (16, 8), (22, 8), (28, 4), (28, 10), (40, 4)):
    _register_pair(f"wrn{_depth}_{_k}", f"sharewrn{_depth}_{_k}", "cifar_basic",
                   stage_sizes=((_depth - 4) // 6,) * 3,
                   stage_features=(16 * _k, 32 * _k, 64 * _k))

# ImageNet ResNets, torchvision layout.
for _depth, _family, _sizes in (
    (18, "imagenet_basic", (2, 2, 2, 2)),
    (34, "imagenet_basic", (3, 4, 6, 3)),
    (50, "imagenet_bottleneck", (3, 4, 6, 3)),
    (101, "imagenet_bottleneck", (3, 4, 23, 3)),
    (152, "imagenet_bottleneck", (3, 8, 36, 3)),
):
    _register_pair(f"resnet{_depth}", f"sharesnet{_depth}", _family, stage_sizes=_sizes)


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    """The registry entry of `name`; an unknown name is a ValueError with close matches."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=5, cutoff=0.5)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (see sharesnet_jax.models.list_models())")
    return _REGISTRY[name]


def family_of(model: nn.Module) -> FamilySpec:
    """The family of a built model (a module created by `create_model` or `spec.build`)."""
    for family in FAMILIES.values():
        if type(model) is family.network and model.block_cls is family.block:
            return family
    raise ValueError(f"{type(model).__name__} with {getattr(model, 'block_cls', None)} is not a "
                     "registered model family")


def create_model(name: str, *, num_classes: int, **overrides) -> nn.Module:
    """Builds a registered model; `overrides` set module fields (dtype, share, dropout_rate...)."""
    spec = model_spec(name)
    known = {f.name for f in dataclasses.fields(spec.family.network)} - {
        "parent", "name", "block_cls"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"model {name!r} has no field {unknown[0]!r}; its fields: "
                         f"{', '.join(sorted(known))}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be a positive integer")
    return spec.build(num_classes=num_classes, **overrides)

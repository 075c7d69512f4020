"""The config schema: every field a run reads, with its one default, and the choices of each
enumerated field. Library code reads `config.FIELD` and never supplies a default of its own.

The files in `configs/` are thin: a docstring with the command and the expected result, and a
`get_config()` that starts from a recipe (`recipes.py`) or from `base_config()`.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import ml_collections
from ml_collections.config_dict import placeholder

from sharesnet_jax.errors import UserError

# Computation dtypes a config may name; parameters and statistics stay float32.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # Model. Unset (None) keeps the registry's value for that module field.
    c.model = "cifar_sharesnet20"
    c.share = placeholder(str)  # 'none' | 'paper' | 'all'
    c.dropout_rate = placeholder(float)
    c.stage_impl = placeholder(str)  # 'loop' | 'scan'
    # What each block keeps for its backward pass: 'none' | 'full' | 'conv_outputs'
    # (models/stage.py, REMAT_POLICIES). `remat=True` is the older spelling of 'full'.
    c.remat_policy = placeholder(str)
    c.remat = placeholder(bool)
    # BatchNorm statistics over groups of this many examples in training; 0: the whole global
    # batch. Data-parallel Torch code (fb.resnet.torch) computes them per GPU: set the per-GPU
    # batch to train as it did. Must divide batch_size (and best the per-device batch).
    c.bn_group_size = 0
    c.init_from = placeholder(str)  # .pth or workdir: start from those weights (see warm_start)
    c.dtype = "float32"  # computation dtype; parameters and statistics stay float32
    # Data.
    c.dataset = "digits"  # 'digits' (embedded), 'cifar10', 'imagenet2012', any TFDS name, 'synthetic'
    c.data_dir = placeholder(str)  # None: the TFDS default (~/tensorflow_datasets)
    c.download = False
    c.manual_dir = placeholder(str)
    c.train_split = "train"
    c.eval_split = placeholder(str)  # None: 'test', else 'validation'
    c.image_size = placeholder(int)  # None: the dataset's (32 CIFAR-style, 224 ImageNet-style)
    c.augment = "auto"  # 'auto' | 'cifar' | 'imagenet' | 'none'
    c.color_jitter = 0.0  # ImageNet style only: brightness/contrast/saturation strength
    c.pca_lighting = 0.0  # ImageNet style only: std of the PCA lighting noise
    # Examples the training shuffle draws from; 0: a full permutation of the training split every
    # epoch (the Torch codes' randperm). A finite buffer suits splits too large to permute whole.
    c.shuffle_buffer = 0
    c.num_classes = placeholder(int)  # synthetic data only; real datasets state theirs
    # Optimisation.
    c.optimizer = "sgd"
    c.learning_rate = 0.1  # for a global batch of learning_rate_batch_size; scaled linearly
    c.learning_rate_batch_size = 128
    c.momentum = 0.9
    c.nesterov = True
    c.weight_decay = 5e-4
    c.schedule = "steps"  # 'steps' | 'cosine' | 'constant'
    # Completed epochs after which the rate is multiplied by lr_decay_factor. The Wide ResNet code
    # (train.lua L173-184) decays at the START of its 1-based epochs 60, 120, 160 (epoch_step),
    # i.e. after 59, 119 and 159 completed epochs.
    c.lr_decay_epochs = (59, 119, 159)
    c.lr_decay_factor = 0.2
    c.warmup_epochs = 0.0
    c.label_smoothing = 0.0
    c.skip_nonfinite = False
    # The element type of the gradient all-reduce, 'float32' | 'bfloat16': either way each
    # parameter's gradient crosses the data axis once per step (steps.make_train_step).
    c.grad_reduce_dtype = "float32"
    # Length and batch (global, over all devices and hosts).
    c.num_epochs = 200.0
    c.num_train_steps = -1  # > 0 overrides num_epochs
    c.batch_size = 128
    c.eval_batch_size = 500
    c.seed = 0
    # Bookkeeping.
    c.log_every_steps = 100
    c.eval_every_epochs = 1
    c.eval_every_steps = 0  # > 0 overrides eval_every_epochs
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 3
    c.eval_only = False
    return c


def remat_policy(config: Any) -> str | None:
    """`remat_policy`, or what the older boolean `remat` meant ('full' or 'none'); records of
    runs before `remat_policy` existed hold only the boolean (and the schema's None here)."""
    policy, legacy = config["remat_policy"], config["remat"]
    if legacy is None:
        return policy
    if policy is not None and (policy != "none") != legacy:
        raise UserError(f"remat={legacy!r} contradicts remat_policy={policy!r}: set only "
                        "remat_policy ('none', 'full' or 'conv_outputs')")
    return policy if policy is not None else ("full" if legacy else "none")

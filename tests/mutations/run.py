"""Mutation harness: plants one-line bugs, each breaking a claim of tests/CLAIMS.md, and checks
that the claim's tests catch each one.

    python tests/mutations/run.py                 # every mutation, then the table
    python tests/mutations/run.py --only NAME     # one (repeatable)
    python tests/mutations/run.py --claim C12     # the mutations of one claim (repeatable)
    python tests/mutations/run.py --list          # the mutations, their claims and tests
    python tests/mutations/run.py --uncovered     # claims of CLAIMS.md without a mutation

For each mutation the repository (package, tests, configs, pyproject) is copied to a temporary
directory, ONE line is replaced there, and pytest runs the mutation's test selection with that
directory as cwd (so the copy is imported, also by tests that start subprocesses), with this
interpreter. Each selection is first run once on an unmutated copy (the baseline, cached per
selection for the invocation): a mutation is "caught" only by tests that fail with it AND pass
on the unmutated code. A mutation whose original line is not found exactly once is reported as
"stale" (the code moved on: update the line here), a selection naming a test file that does not
exist as "test file missing"; neither is silently skipped. The working tree is never modified.
Not collected by pytest (this folder holds no test_*.py files).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
COPIED = ("sharesnet_jax", "tests", "configs", "benchmarks", "colab", ".ci", "pyproject.toml", "README.md",
          "constraints.txt")


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    file: str  # relative to the repository
    original: str  # the line, compared without its leading/trailing whitespace
    replacement: str  # put in with the original line's indentation
    tests: tuple[str, ...]  # pytest arguments: files, file::test ids, -k expressions
    why: str = ""
    claim: str = ""  # the claim id in tests/CLAIMS.md this mutation breaks


LAYERS = "sharesnet_jax/models/layers.py"
STAGE = "sharesnet_jax/models/stage.py"
INIT = "sharesnet_jax/models/initialization.py"
TRAINER = "sharesnet_jax/training/trainer.py"
STEPS = "sharesnet_jax/training/steps.py"
PIPELINE = "sharesnet_jax/data/pipeline.py"
PLANNER = "sharesnet_jax/preflight/plan.py"
TPU_PLANNER = "sharesnet_jax/preflight/tpu.py"
GPU_PLANNER = "sharesnet_jax/preflight/gpu.py"
FIT = "sharesnet_jax/preflight/fit.py"
TARGETS = "sharesnet_jax/preflight/targets.py"
ACCELERATORS = "sharesnet_jax/preflight/accelerators.py"
SAFE_FILES = "sharesnet_jax/safe_files.py"
VALIDATION = "sharesnet_jax/training/validation.py"
SOURCES = "sharesnet_jax/data/sources.py"
LOCK = "sharesnet_jax/training/workdir_lock.py"
PREDICT = "sharesnet_jax/predict.py"

MUTATIONS = [
    Mutation(
        "scan_init_params_rng_not_split", STAGE,
        'split_rngs={"params": True, "dropout": True},',
        'split_rngs={"params": False, "dropout": True},',
        ("tests/models/test_scan.py",),
        "blocks 2..n of a scanned stage start from identical weights"),
    Mutation(
        "remat_ignored", STAGE,
        'if self.remat_policy != "none":',
        "if False:",
        ("tests/models/test_scan.py", "-k", "recomputes_what_it_says"),
        "remat_policy silently does nothing"),
    Mutation(
        "unshare_block2_3x3", STAGE,
        "conv=self.conv, norm=self.norm, share=self.share, block_index=index,",
        'conv=self.conv, norm=self.norm, share=self.share if index != 1 else "none", block_index=index,',
        ("tests/models/test_models.py", "-k", "exact_parameter_counts or distinct_3x3"),
        "block 2 of each stage gets its own 3x3 instead of the shared one (loop impl)"),
    Mutation(
        "conv_init_changed", INIT,
        'conv_kernel=nn.initializers.variance_scaling(2.0, "fan_in", "normal"),',
        'conv_kernel=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),',
        ("tests/models/test_init.py",),
        "the CIFAR nets' conv init uses fan_out (fb.resnet.torch's) instead of the WRN code's fan_in"),
    Mutation(
        "bn_scale_init_changed", INIT,
        "norm_scale=nn.initializers.uniform(scale=1.0),  # U(0, 1)",
        "norm_scale=nn.initializers.ones,",
        ("tests/models/test_init.py",),
        "the CIFAR nets' BatchNorm scales start at 1 instead of Torch's U(0, 1)"),
    Mutation(
        "bn_epsilon", LAYERS,
        "options = dict(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,",
        "options = dict(use_running_average=not train, momentum=0.9, epsilon=1e-3, dtype=dtype,",
        ("tests/training/test_steps.py",),
        "BatchNorm epsilon 1e-3 instead of Torch's 1e-5"),
    Mutation(
        "bn_momentum", LAYERS,
        "options = dict(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,",
        "options = dict(use_running_average=not train, momentum=0.99, epsilon=1e-5, dtype=dtype,",
        ("tests/training/test_steps.py",),
        "running averages move 10x slower than the paper's"),
    Mutation(
        "bn_groups_span_the_batch", "sharesnet_jax/models/batch_norm.py",
        "axes = tuple(range(1, groups.ndim - 1))",
        "axes = tuple(range(0, groups.ndim - 1))",
        ("tests/models/test_batch_norm.py",),
        "bn_group_size statistics taken over the whole batch instead of each group"),
    Mutation(
        "colour_jitter_fixed_order", "sharesnet_jax/data/augment.py",
        "order = tf.argsort(tf.random.stateless_uniform([3], order_key))",
        "order = tf.range(3)",
        ("tests/data/test_augment.py",),
        "brightness, contrast, saturation always in one order (fb.resnet.torch draws one per image)"),
    Mutation(
        "shuffle_buffer_not_full", PIPELINE,
        "reader.shuffle_buffer or info.num_train_examples,",
        "reader.shuffle_buffer or 64,",
        ("tests/data/test_pipeline.py", "-k", "full_permutation"),
        "each epoch a 64-example shuffle buffer instead of a full permutation"),
    Mutation(
        "nnx_batch_norm_immutable", "sharesnet_jax/models/nnx.py",
        'return self.net(images, train=train, mutable=["batch_stats"] if train else False)',
        'return self.net(images, train=train, mutable=False)',
        ("tests/models/test_nnx.py", "-k", "optax_step"),
        "NNX training mode without mutable batch_stats (the bridge's default)"),
    Mutation(
        "nnx_keys_split_by_nnx", "sharesnet_jax/models/nnx.py",
        "nnx.bridge.lazy_init(self.net, sample_images, train=False, rngs=key)",
        "nnx.bridge.lazy_init(self.net, sample_images, train=False, rngs=nnx.Rngs(params=key))",
        ("tests/models/test_nnx.py", "-k", "initial_parameters"),
        "NNX initial parameters drawn with NNX's key splitting, not Linen's init"),
    Mutation(
        "nnx_given_variables_dropped", "sharesnet_jax/models/nnx.py",
        "nnx.update(net.net, nnx.State.from_flat_path(flat))",
        "pass",
        ("tests/models/test_nnx.py", "-k", "from_variables"),
        "from_variables keeps a fresh init instead of the given arrays"),
    Mutation(
        "export_fixed_batch", "sharesnet_jax/export.py",
        "jax.ShapeDtypeStruct((batch, *image_shape), jnp.float32))",
        "jax.ShapeDtypeStruct((5, *image_shape), jnp.float32))",
        ("tests/test_export.py", "-k", "without_flax"),
        "the exported batch dimension is fixed, not symbolic"),
    Mutation(
        "served_input_rescaled", "sharesnet_jax/serving.py",
        "return np.asarray(self._logits(images.astype(np.float32)))",
        "return np.asarray(self._logits(images.astype(np.float32) / 255 * 255.01))",
        ("tests/test_export.py", "-k", "without_flax"),
        "the loader feeds pixels off by 4e-5 relative (logits off by ~3e-4)"),
    Mutation(
        "damaged_artifact_traceback", "sharesnet_jax/serving.py",
        "except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as err:",
        "except zipfile.LargeZipFile as err:",
        ("tests/test_export.py", "-k", "damaged"),
        "a truncated or corrupted artifact raises zipfile's own error, not one line"),
    Mutation(
        "onnx_graph_off", "sharesnet_jax/onnx_export.py",
        'model = jax2onnx.to_onnx(logits, [("batch", *image_shape)], model_name=metadata["model"],',
        'model = jax2onnx.to_onnx(lambda x: logits(x * 1.01), [("batch", *image_shape)], '
        'model_name=metadata["model"],',
        ("tests/test_export.py", "-k", "onnx"),
        "an ONNX graph that computes other logits is written"),
    Mutation(
        "export_ignores_sharing", STAGE,
        "return slot in block.paper_shared_slots(block.block_index, block.strides)",
        "return False",
        ("tests/test_export.py", "-k", "shrinks"),
        "a shared twin exported as large as its unshared twin"),
    Mutation(
        "export_temporary_left_behind", "sharesnet_jax/serving.py",
        "os.unlink(temporary)",
        "pass",
        ("tests/test_export.py", "-k", "interrupted"),
        "an export that fails mid-write leaves its temporary file"),
    Mutation(
        "bn_update_dropped", STEPS,
        "new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,",
        "new_state = state.replace(step=state.step + 1, params=params, batch_stats=state.batch_stats,",
        ("tests/training/test_steps.py",),
        "the train step never stores the updated BatchNorm statistics"),
    Mutation(
        "nonfinite_params_unchecked", STEPS,
        "& jnp.isfinite(optax.global_norm((params, batch_stats))))",
        ")",
        ("tests/training/test_fault_tolerance.py", "-k", "nonfinite"),
        "a finite loss with non-finite new parameters passes the check"),
    Mutation(
        "checkpoint_before_nonfinite_check", TRAINER,
        "if step % config.log_every_steps == 0 or checkpoint_now:",
        "if step % config.log_every_steps == 0:",
        ("tests/training/test_fault_tolerance.py", "-k", "last_checkpoint_precedes_them"),
        "a checkpoint is written before the step's metrics are checked"),
    Mutation(
        "every_process_reads_share_0", TRAINER,
        "start_step=start_step, process_index=jax.process_index(),",
        "start_step=start_step, process_index=0,",
        ("tests/training/test_multihost.py", "-k", "reads_this_processs_share"),
        "every process trains on process 0's share of the data"),
    Mutation(
        "resume_restarts_from_step_0", TRAINER,
        "step, state = restored",
        "step, state = restored[0], state",
        ("tests/training/test_trainer.py", "-k", "restarted"),
        "a run 'resumes' (and says so) but trains from step 0 again"),
    Mutation(
        "resume_restarts_from_step_0_cli", TRAINER,
        "step, state = restored",
        "step, state = restored[0], state",
        ("tests/training/test_fault_tolerance.py", "-k", "sigterm or unreadable"),
        "the same, seen by the command-line resume tests (SIGTERM, unreadable checkpoint)"),
    Mutation(
        "data_restarts_at_step_0_after_resume", TRAINER,
        "train_step, batches = run.train_step, train_batches(config, info, mesh, start_step=step)",
        "train_step, batches = run.train_step, train_batches(config, info, mesh, start_step=0)",
        ("tests/training/test_trainer.py", "-k", "restarted"),
        "a resumed run replays the data from the first batch"),
    Mutation(
        "pipeline_resume_position_lost", PIPELINE,
        "first_example=step_in_epoch * local_batch_size,",
        "first_example=0,",
        ("tests/data/test_pipeline.py", "tests/data/test_shares.py", "-k", "resume"),
        "the pipeline restarts the epoch instead of continuing within it"),
    Mutation(
        "pipeline_train_share_ignored", PIPELINE,
        "source, reader.split, process_index=process_index, process_count=process_count,",
        "source, reader.split, process_index=0, process_count=process_count,",
        ("tests/data/test_pipeline.py", "-k", "process_train_shares_are_disjoint"),
        "the pipeline reads process 0's training share on every process"),
    Mutation(
        "planner_known_crash_unguarded", TPU_PLANNER,
        "refuse_known_compiler_crash(chip.name)",
        "pass",
        ("tests/preflight/test_tpu.py", "-k", "v6e_is_one_line"),
        "the planner compiles for a generation its libtpu is known to crash on (a segfault)"),
    Mutation(
        "trainer_known_crash_unwarned", TRAINER,
        "_warn_of_known_compiler_crash()",
        "pass",
        ("tests/preflight/test_tpu.py", "-k", "trainer_warns_of_a_known"),
        "the trainer compiles, on a real v6e, with a libtpu known to crash there, unannounced"),
    Mutation(
        "planner_bn_groups_unchecked", PLANNER,
        "validation.check_bn_groups(config, cluster.num_devices)",
        "pass",
        ("tests/preflight/test_tpu.py", "-k", "bn_groups"),
        "the planner checks BatchNorm groups against this machine's devices, not the slice's"),
    Mutation(
        "gradient_reduced_per_use", STEPS,
        "value_and_grad = _data_parallel_grads(model, mesh or sharding.make_data_mesh(),",
        "value_and_grad = (lambda *a: _value_and_grad(model, label_smoothing, *a)) if True "
        "else _data_parallel_grads(model, mesh,",
        ("tests/training/test_gradient_reduce.py", "-k", "once_in_every_layout"),
        "the partitioner places the gradient all-reduce: a shared kernel once per use"),
    Mutation(
        "gradient_reduce_ignores_dtype", STEPS,
        "return jax.lax.pmean(grad.astype(reduce_dtype), axis).astype(grad.dtype)",
        "return jax.lax.pmean(grad, axis)",
        ("tests/preflight/test_tpu.py", "-k", "gradients_all_reduced_once_in_the_chosen_dtype"),
        "grad_reduce_dtype='bfloat16' still all-reduces float32"),
    Mutation(
        "remat_repeats_collectives", STAGE,
        "return primitive is jax.lax.psum_p",
        "return False",
        ("tests/training/test_gradient_reduce.py", "-k", "once_in_every_layout"),
        "a rematerialised block repeats BatchNorm's cross-device reductions in the backward"),
]


# The claims of tests/CLAIMS.md that the mutations above break.
_EARLIER_CLAIMS = {
    "scan_init_params_rng_not_split": "C3", "remat_ignored": "C127", "unshare_block2_3x3": "C16",
    "conv_init_changed": "C29", "bn_scale_init_changed": "C29", "bn_epsilon": "C27",
    "bn_momentum": "C27", "bn_groups_span_the_batch": "C26", "colour_jitter_fixed_order": "C46",
    "shuffle_buffer_not_full": "C52", "bn_update_dropped": "C28",
    "nonfinite_params_unchecked": "C80", "checkpoint_before_nonfinite_check": "C79",
    "every_process_reads_share_0": "C91", "resume_restarts_from_step_0": "C34",
    "resume_restarts_from_step_0_cli": "C67", "data_restarts_at_step_0_after_resume": "C34",
    "pipeline_resume_position_lost": "C66", "pipeline_train_share_ignored": "C90",
    "planner_known_crash_unguarded": "C109", "trainer_known_crash_unwarned": "C147",
    "planner_bn_groups_unchecked": "C110", "gradient_reduced_per_use": "C111",
    "gradient_reduce_ignores_dtype": "C125", "remat_repeats_collectives": "C111",
    "nnx_batch_norm_immutable": "C135", "nnx_keys_split_by_nnx": "C136",
    "nnx_given_variables_dropped": "C137", "export_fixed_batch": "C130",
    "served_input_rescaled": "C130", "damaged_artifact_traceback": "C131",
    "onnx_graph_off": "C132", "export_ignores_sharing": "C133",
    "export_temporary_left_behind": "C134",
}
MUTATIONS = [dataclasses.replace(m, claim=_EARLIER_CLAIMS[m.name]) for m in MUTATIONS]

AUGMENT = "sharesnet_jax/data/augment.py"
OPTIM = "sharesnet_jax/training/optim.py"
RECIPES = "sharesnet_jax/training/recipes.py"
CONFIG = "sharesnet_jax/training/config.py"
STATS = "sharesnet_jax/models/stats.py"
PREDICT = "sharesnet_jax/predict.py"
BLOCKS = "sharesnet_jax/models/blocks.py"
GEOMETRY = "tests/data/test_augment_geometry.py"
SCHEDULE = "tests/training/test_schedule_and_optimizer.py"
EVAL_METRICS = "tests/training/test_eval_metrics.py"
IMAGENET_RUN = "tests/training/test_imagenet_style_run.py"
RECIPE_TESTS = "tests/training/test_config_recipes.py"
MACS = "tests/models/test_macs_and_flops.py"


def _m(claim, name, file, original, replacement, tests, why):
    return Mutation(name, file, original, replacement, tuple(tests), why, claim)


MUTATIONS += [
    # Evaluation transform and CIFAR/ImageNet training augmentation (data/augment.py).
    _m("C50", "centre_offsets_rounded_down", AUGMENT,
       "top, left = (shape[0] - hw[0] + 1) // 2, (shape[1] - hw[1] + 1) // 2",
       "top, left = (shape[0] - hw[0]) // 2, (shape[1] - hw[1]) // 2",
       (GEOMETRY, "-k", "evaluation_view_scales or center_crop"),
       "CenterCrop offsets floor((W - w) / 2) instead of Lua's ceil: one pixel off on odd margins"),
    _m("C50", "scaled_longer_side_rounded", AUGMENT,
       "longer = lambda a, b: tf.cast(tf.cast(a, tf.float64) * size / tf.cast(b, tf.float64), tf.int32)",
       "longer = lambda a, b: tf.cast(tf.round(tf.cast(a, tf.float64) * size / tf.cast(b, tf.float64)), tf.int32)",
       (GEOMETRY, "-k", "scale_shorter_side or evaluation_view_scales"),
       "Scale rounds the longer side instead of truncating it"),
    _m("C50", "scale_picks_the_longer_side", AUGMENT,
       "new_hw = tf.cond(height <= width, lambda: tf.stack([size, longer(width, height)]),",
       "new_hw = tf.cond(height >= width, lambda: tf.stack([size, longer(width, height)]),",
       (GEOMETRY, "-k", "evaluation_view_scales"),
       "portrait images get their longer side scaled to 256"),
    _m("C49", "eval_resize_ratio", AUGMENT,
       "IMAGENET_EVAL_RESIZE_RATIO = 256 / 224", "IMAGENET_EVAL_RESIZE_RATIO = 1.15",
       (GEOMETRY, "-k", "at_224"), "evaluation scales the shorter side to 258, not 256"),
    _m("C45", "resize_bilinear", AUGMENT,
       "return tf.image.resize(tf.cast(image, tf.float32), hw, method='bicubic')",
       "return tf.image.resize(tf.cast(image, tf.float32), hw, method='bilinear')",
       (GEOMETRY, "-k", "random_sized_crop_resizes or evaluation_view_scales"),
       "bilinear instead of fb.resnet.torch's bicubic"),
    _m("C42", "crop_sides_floored", AUGMENT,
       "w = tf.floor(tf.sqrt(target * aspect) + 0.5)  # torch.round: halves away from zero",
       "w = tf.floor(tf.sqrt(target * aspect))",
       (GEOMETRY, "-k", "lua_window"), "crop widths truncated instead of torch.round"),
    _m("C42", "crop_never_swapped", AUGMENT,
       "w, h = tf.where(swap, h, w), tf.where(swap, w, h)", "w, h = w, h",
       (GEOMETRY, "-k", "lua_window"), "RandomSizedCrop never swaps width and height"),
    _m("C42", "crop_area_range", AUGMENT,
       "IMAGENET_CROP_AREA_RANGE = (0.08, 1.0)", "IMAGENET_CROP_AREA_RANGE = (0.25, 1.0)",
       (GEOMETRY, "-k", "lua_window"), "crops of 25-100% of the area instead of 8-100%"),
    _m("C42", "crop_aspect_range", AUGMENT,
       "IMAGENET_CROP_ASPECT_RANGE = (3 / 4, 4 / 3)", "IMAGENET_CROP_ASPECT_RANGE = (1 / 2, 2)",
       (GEOMETRY, "-k", "lua_window"), "aspect ratios 1/2-2 instead of 3/4-4/3"),
    _m("C42", "crop_three_attempts", AUGMENT,
       "IMAGENET_CROP_MAX_ATTEMPTS = 10", "IMAGENET_CROP_MAX_ATTEMPTS = 3",
       (GEOMETRY, "-k", "lua_window"), "3 attempts before the fallback instead of 10"),
    _m("C42", "crop_last_fit", AUGMENT,
       "first = tf.argmax(tf.cast(fits, tf.int32))",
       "first = tf.argmax(tf.cast(fits, tf.int32) * tf.range(1, 11))",
       (GEOMETRY, "-k", "lua_window"), "the last candidate that fits instead of the first"),
    _m("C43", "crop_offset_exclusive", AUGMENT,
       "top = tf.cast(offsets[0] * tf.cast(height - crop_h + 1, tf.float32), tf.int32)",
       "top = tf.cast(offsets[0] * tf.cast(height - crop_h, tf.float32), tf.int32)",
       (GEOMETRY, "-k", "far_edges"), "crops never touch the bottom edge"),
    _m("C44", "crop_fallback_squashes", AUGMENT,
       "return center_crop(scale_shorter_side(decoded, max(hw)), hw)",
       "return resize_bicubic(decoded, hw)",
       (GEOMETRY, "-k", "random_sized_crop_resizes"),
       "the fallback squashes the whole image instead of Scale + CenterCrop"),
    _m("C44", "crop_window_at_the_origin", AUGMENT,
       "cropped = tf.slice(image, [top, left, 0], [crop_h, crop_w, -1])",
       "cropped = tf.slice(image, [0, 0, 0], [crop_h, crop_w, -1])",
       (GEOMETRY, "-k", "random_sized_crop_resizes"), "decoded images are cropped at (0, 0)"),
    _m("C55", "cifar_pad_symmetric", AUGMENT, "mode='REFLECT',", "mode='SYMMETRIC',",
       (GEOMETRY, "-k", "cifar_view"), "CIFAR padding repeats the edge pixel"),
    _m("C55", "cifar_pad_zeros", AUGMENT, "mode='REFLECT',", "mode='CONSTANT',",
       (GEOMETRY, "-k", "cifar_view"), "CIFAR padding with zeros instead of reflections"),
    _m("C55", "cifar_padding_2", AUGMENT, "CIFAR_PADDING = 4", "CIFAR_PADDING = 2",
       (GEOMETRY, "-k", "cifar_view"), "2-pixel instead of 4-pixel padding"),
    _m("C55", "cifar_never_flipped", AUGMENT,
       "return tf.image.stateless_random_flip_left_right(cropped, seed=flip_key)",
       "return cropped", (GEOMETRY, "-k", "cifar_view"), "CIFAR views are never flipped"),
    _m("C47", "lighting_eigenvalue", AUGMENT,
       "LIGHTING_EIGVAL = (0.2175, 0.0188, 0.0045)", "LIGHTING_EIGVAL = (0.2175, 0.0188, 0.045)",
       (GEOMETRY, "-k", "colour_constants"), "a mistyped PCA eigenvalue"),
    _m("C47", "lighting_eigenvectors_transposed", AUGMENT,
       "return x + tf.linalg.matvec(tf.constant(LIGHTING_EIGVEC), alpha * tf.constant(LIGHTING_EIGVAL))",
       "return x + tf.linalg.matvec(tf.constant(LIGHTING_EIGVEC), alpha * tf.constant(LIGHTING_EIGVAL), transpose_a=True)",
       (GEOMETRY, "-k", "colour_constants"), "eigenvectors read as columns instead of rows"),
    _m("C47", "jitter_factors_narrow", AUGMENT,
       "factors = tf.random.stateless_uniform([3], factor_key, 1.0 - jitter, 1.0 + jitter)",
       "factors = tf.random.stateless_uniform([3], factor_key, 1.0 - jitter / 2, 1.0 + jitter)",
       (GEOMETRY, "-k", "colour_constants"), "jitter factors never go below 1 - 0.2"),
    _m("C47", "grayscale_weights", AUGMENT,
       "GRAYSCALE_WEIGHTS = (0.299, 0.587, 0.114)",
       "GRAYSCALE_WEIGHTS = (0.2126, 0.7152, 0.0722)",
       (GEOMETRY, "-k", "colour_constants"), "Rec. 709 luma instead of transforms.lua's"),
    _m("C48", "colour_clipped", AUGMENT,
       "return x + tf.linalg.matvec(tf.constant(LIGHTING_EIGVEC), alpha * tf.constant(LIGHTING_EIGVAL))",
       "return tf.clip_by_value(x + tf.linalg.matvec(tf.constant(LIGHTING_EIGVEC), alpha * tf.constant(LIGHTING_EIGVAL)), 0.0, 1.0)",
       ("tests/data/test_augment.py", "-k", "colour_jitter_follows"),
       "colour augmentation clipped to 0..1 before the final uint8"),
    _m("C46", "contrast_blends_with_the_pixel_mean", AUGMENT,
       "lambda y: tf.fill(tf.shape(y), tf.reduce_mean(grayscale(y))),  # contrast",
       "lambda y: tf.fill(tf.shape(y), tf.reduce_mean(y)),  # contrast",
       ("tests/data/test_augment.py", "-k", "colour_jitter_follows"),
       "contrast blends with the mean of all channels, not the mean grey level"),
    _m("C53", "cifar100_own_statistics", "sharesnet_jax/data/info.py",
       "'cifar100': _CIFAR10_MEAN_STD,",
       "'cifar100': ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),",
       ("tests/data/test_dataset_statistics.py",),
       "CIFAR-100 normalised with its own statistics, not the Wide ResNet code's CIFAR-10 ones"),
    _m("C53", "cifar10_std_of_another_code", "sharesnet_jax/data/info.py",
       "_CIFAR10_MEAN_STD = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))",
       "_CIFAR10_MEAN_STD = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))",
       ("tests/data/test_dataset_statistics.py",), "the widespread wrong CIFAR-10 std"),
    # Learning-rate schedules and optimizers (training/optim.py).
    _m("C32", "lr_not_scaled_with_the_batch", OPTIM,
       "return config.learning_rate * config.batch_size / reference",
       "return config.learning_rate", (SCHEDULE, "-k", "scales_linearly"),
       "the learning rate ignores the global batch"),
    _m("C63", "decays_ignore_the_warmup", OPTIM,
       "int(round(epoch * steps_per_epoch)) - warmup_steps: config.lr_decay_factor",
       "int(round(epoch * steps_per_epoch)): config.lr_decay_factor",
       (SCHEDULE, "-k", "warmup_rises"), "with warmup, every decay comes warmup steps late"),
    _m("C54", "decays_one_epoch_late", OPTIM,
       "int(round(epoch * steps_per_epoch)) - warmup_steps: config.lr_decay_factor",
       "int(round((epoch + 1) * steps_per_epoch)) - warmup_steps: config.lr_decay_factor",
       (SCHEDULE, "-k", "completed_epochs"), "decays after epoch e + 1 instead of e"),
    _m("C63", "warmup_from_a_tenth", OPTIM,
       "warmup = optax.linear_schedule(0.0, peak, warmup_steps)",
       "warmup = optax.linear_schedule(0.1 * peak, peak, warmup_steps)",
       (SCHEDULE, "-k", "warmup_rises"), "warmup starts at 10% of the peak instead of 0"),
    _m("C63", "warmup_epochs_read_as_steps", OPTIM,
       "warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))",
       "warmup_steps = int(round(config.warmup_epochs))",
       (SCHEDULE, "-k", "warmup_rises"), "warmup_epochs taken as steps"),
    _m("C64", "cosine_spans_the_warmup_too", OPTIM,
       "main = optax.cosine_decay_schedule(peak, max(total_steps - warmup_steps, 1))",
       "main = optax.cosine_decay_schedule(peak, max(total_steps, 1))",
       (SCHEDULE, "-k", "cosine"), "the cosine does not reach 0 at the last step after warmup"),
    _m("C60", "sgd_without_weight_decay", OPTIM,
       "optax.add_decayed_weights(config.weight_decay),", "optax.add_decayed_weights(0.0),",
       (SCHEDULE, "-k", "sgd_updates"), "weight decay silently dropped"),
    _m("C61", "sgd_always_nesterov", OPTIM,
       "optax.sgd(schedule, momentum=config.momentum, nesterov=config.nesterov),",
       "optax.sgd(schedule, momentum=config.momentum, nesterov=True),",
       (SCHEDULE, "-k", "sgd_updates"), "nesterov=False ignored"),
    _m("C61", "sgd_fixed_momentum", OPTIM,
       "optax.sgd(schedule, momentum=config.momentum, nesterov=config.nesterov),",
       "optax.sgd(schedule, momentum=0.9, nesterov=config.nesterov),",
       (SCHEDULE, "-k", "sgd_updates"), "the momentum field ignored"),
    _m("C62", "adamw_without_decay", OPTIM,
       "return optax.adamw(schedule, weight_decay=config.weight_decay)",
       "return optax.adam(schedule)", (SCHEDULE, "-k", "adamw"), "AdamW without its weight decay"),
    # Recipes and configs.
    _m("C58", "imagenet_third_decay", RECIPES,
       "c.lr_decay_epochs, c.lr_decay_factor = (30, 60), 0.1",
       "c.lr_decay_epochs, c.lr_decay_factor = (30, 60, 80), 0.1",
       (SCHEDULE, "-k", "imagenet_recipe"), "an extra decay at epoch 80"),
    _m("C58", "imagenet_decay_factor", RECIPES,
       "c.lr_decay_epochs, c.lr_decay_factor = (30, 60), 0.1",
       "c.lr_decay_epochs, c.lr_decay_factor = (30, 60), 0.2",
       (SCHEDULE, "-k", "imagenet_recipe"), "x0.2 instead of /10"),
    _m("C58", "imagenet_100_epochs", RECIPES, "c.num_epochs = 90.0", "c.num_epochs = 100.0",
       (SCHEDULE, "-k", "imagenet_recipe"), "100 epochs instead of 90"),
    _m("C58", "imagenet_lr_for_128", RECIPES,
       "c.learning_rate, c.learning_rate_batch_size = 0.1, 256",
       "c.learning_rate, c.learning_rate_batch_size = 0.1, 128",
       (SCHEDULE, "-k", "imagenet_recipe"), "0.1 per 128 images: twice the rate"),
    _m("C59", "imagenet_weight_decay", RECIPES, "c.weight_decay = 1e-4", "c.weight_decay = 5e-4",
       (RECIPE_TESTS, "-k", "imagenet_sharesnet50"), "the CIFAR weight decay on ImageNet"),
    _m("C59", "imagenet_no_lighting", RECIPES,
       "c.color_jitter, c.pca_lighting = 0.4, 0.1", "c.color_jitter, c.pca_lighting = 0.4, 0.0",
       (RECIPE_TESTS, "-k", "imagenet_resnet101"), "PCA lighting off"),
    _m("C59", "imagenet_bn_groups_of_32", RECIPES, "c.bn_group_size = 64", "c.bn_group_size = 32",
       (RECIPE_TESTS, "-k", "imagenet_sharesnet152"), "BatchNorm per 32 images, not per GPU's 64"),
    _m("C59", "imagenet_small_shuffle_buffer", RECIPES, "c.shuffle_buffer = 50_000",
       "c.shuffle_buffer = 10_000", (RECIPE_TESTS, "-k", "imagenet_resnet34"),
       "a 10,000-example shuffle buffer"),
    _m("C54", "cifar_decays_at_1_based_epochs", CONFIG, "c.lr_decay_epochs = (59, 119, 159)",
       "c.lr_decay_epochs = (60, 120, 160)", (SCHEDULE, "-k", "completed_epochs"),
       "the Torch code's 1-based epochs read as completed ones"),
    _m("C54", "cifar_decay_factor", CONFIG, "c.lr_decay_factor = 0.2", "c.lr_decay_factor = 0.1",
       (SCHEDULE, "-k", "completed_epochs"), "/10 instead of x0.2"),
    _m("C56", "cifar_weight_decay", CONFIG, "c.weight_decay = 5e-4", "c.weight_decay = 1e-4",
       (RECIPE_TESTS, "-k", "cifar10_sharesnet164"), "the ImageNet weight decay on CIFAR"),
    _m("C56", "cifar_without_nesterov", CONFIG, "c.nesterov = True", "c.nesterov = False",
       (RECIPE_TESTS, "-k", "cifar10_resnet164"), "plain momentum instead of Nesterov"),
    _m("C56", "cifar_160_epochs", CONFIG, "c.num_epochs = 200.0", "c.num_epochs = 160.0",
       (RECIPE_TESTS, "-k", "cifar10_wrn40_4"), "160 epochs instead of 200"),
    _m("C56", "cifar_momentum", CONFIG, "c.momentum = 0.9", "c.momentum = 0.95",
       (RECIPE_TESTS, "-k", "cifar10_sharewrn40_4"), "momentum 0.95"),
    _m("C56", "cifar_bn_groups", CONFIG, "c.bn_group_size = 0", "c.bn_group_size = 32",
       (RECIPE_TESTS, "-k", "cifar100_wrn28_10"), "BatchNorm per 32 on the one-GPU CIFAR runs"),
    _m("C56", "cifar_shuffle_buffer", CONFIG, "c.shuffle_buffer = 0", "c.shuffle_buffer = 10_000",
       (RECIPE_TESTS, "-k", "cifar100_sharewrn28_10"), "no full permutation by default"),
    _m("C57", "wrn28_10_without_dropout", "configs/cifar100_sharewrn28_10.py",
       'return cifar_recipe("sharewrn28_10", "cifar100", dropout_rate=0.3)',
       'return cifar_recipe("sharewrn28_10", "cifar100")',
       (RECIPE_TESTS, "-k", "cifar100_sharewrn28_10"), "the WRN-28-10 run without dropout 0.3"),
    _m("C41", "paper_figure_misquoted", "configs/imagenet_sharesnet152.py",
       "Paper's figure: 22.23% top-1 / 6.14% top-5 error (single 224 centre crop), the author's own",
       "Paper's figure: 22.32% top-1 / 6.14% top-5 error (single 224 centre crop), the author's own",
       (RECIPE_TESTS, "-k", "imagenet_sharesnet152"), "a transposed digit in the paper's figure"),
    _m("C40", "docstring_parameter_count", "configs/cifar10_sharesnet164.py",
       "Parameters: 929,114.", "Parameters: 929,141.",
       ("tests/training/test_trainer.py", "-k", "every_config_loads and cifar10_sharesnet164"),
       "a config docstring states a wrong parameter count"),
    _m("C6", "default_config_steps_schedule", "configs/default.py",
       'c.schedule = "cosine"', 'c.schedule = "steps"',
       (RECIPE_TESTS, "-k", "default_config"), "the default run without its cosine schedule"),
    # Evaluation metrics (training/steps.py make_eval_step, trainer.evaluate).
    _m("C117", "top5_is_top4", STEPS,
       "top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]",
       "top5 = jax.lax.top_k(logits, min(4, logits.shape[-1]))[1]",
       (EVAL_METRICS, "-k", "known_answer or random_logits"), "top-5 counts only 4 classes"),
    _m("C117", "top1_counts_padding", STEPS,
       '"correct": jnp.sum((jnp.argmax(logits, -1) == labels) * mask),',
       '"correct": jnp.sum(jnp.argmax(logits, -1) == labels),',
       (EVAL_METRICS, "-k", "known_answer or random_logits"), "padding counted in top-1"),
    _m("C117", "top5_counts_padding", STEPS,
       '"correct_top5": jnp.sum(jnp.any(top5 == labels[:, None], -1) * mask),',
       '"correct_top5": jnp.sum(jnp.any(top5 == labels[:, None], -1)),',
       (EVAL_METRICS, "-k", "known_answer or random_logits"), "padding counted in top-5"),
    _m("C117", "loss_counts_padding", STEPS,
       '"loss": jnp.sum(cross_entropy(logits, labels) * mask),',
       '"loss": jnp.sum(cross_entropy(logits, labels)),',
       (EVAL_METRICS, "-k", "known_answer or random_logits"), "padding counted in the loss"),
    _m("C117", "count_counts_padding", STEPS, '"count": jnp.sum(mask),',
       '"count": jnp.sum(mask > -1),', (EVAL_METRICS, "-k", "known_answer or random_logits"),
       "padding counted as examples"),
    _m("C118", "evaluate_divides_by_one_more", TRAINER,
       'count = max(float(totals["count"]), 1.0)', 'count = max(float(totals["count"]), 1.0) + 1.0',
       (EVAL_METRICS, "-k", "evaluate_divides"), "metrics divided by one example too many"),
    _m("C118", "evaluate_top5_is_top1", TRAINER,
       '"eval_top5_accuracy": float(totals["correct_top5"]) / count,',
       '"eval_top5_accuracy": float(totals["correct"]) / count,',
       (EVAL_METRICS, "-k", "evaluate_divides"), "eval_top5_accuracy reports top-1"),
    _m("C118", "evaluate_keeps_the_last_batch", TRAINER,
       "totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)",
       "totals = sums", (EVAL_METRICS, "-k", "evaluate_divides"),
       "evaluation reports the last batch only"),
    # What a run leaves: fingerprint, results.json, retention, prediction.
    _m("C36", "fingerprint_of_parameters_only", TRAINER,
       "for leaf in jax.tree.leaves(jax.device_get((params, batch_stats))):",
       "for leaf in jax.tree.leaves(jax.device_get(params)):",
       (EVAL_METRICS, "-k", "fingerprint"), "params_fingerprint ignores the statistics"),
    _m("C37", "results_fingerprint_without_statistics", TRAINER,
       '"params_fingerprint": params_fingerprint(state.params, state.batch_stats),',
       '"params_fingerprint": params_fingerprint(state.params, {}),',
       (IMAGENET_RUN, "-k", "fingerprint"), "results.json's fingerprint ignores the statistics"),
    _m("C35", "results_without_top5", TRAINER,
       '**{k: final[k] for k in ("eval_accuracy", "eval_top5_accuracy", "eval_loss",',
       '**{k: final[k] for k in ("eval_accuracy", "eval_loss",',
       (IMAGENET_RUN, "-k", "fingerprint"), "results.json lacks eval_top5_accuracy"),
    _m("C38", "steps_run_counts_the_restored_steps", TRAINER,
       '"steps_run": step - start_step,  # by this process: a resume runs only the rest',
       '"steps_run": step,', ("tests/training/test_trainer.py", "-k", "restarted"),
       "steps_run of a resumed run includes the steps it did not run"),
    _m("C69", "keep_checkpoints_ignored", TRAINER, "max_to_keep=config.keep_checkpoints)",
       "max_to_keep=3)", (IMAGENET_RUN, "-k", "keep_checkpoints"),
       "keep_checkpoints ignored: always 3"),
    _m("C69", "checkpoints_kept_forever", "sharesnet_jax/training/checkpoints.py",
       "max_to_keep=max_to_keep, enable_async_checkpointing=asynchronous, create=True)",
       "max_to_keep=None, enable_async_checkpointing=asynchronous, create=True)",
       (IMAGENET_RUN, "-k", "keep_checkpoints"), "old checkpoints never removed"),
    _m("C51", "predict_always_cifar_style", PREDICT,
       "self.augment = classifier.record.augment  # the evaluation style the run resolved",
       'self.augment = "cifar"', (IMAGENET_RUN, "-k", "predict"),
       "predict fits images CIFAR-style whatever the run evaluated with"),
    _m("C51", "predict_normalises_with_the_mean_as_std", "sharesnet_jax/classifier.py",
       "return model.apply(variables, normalize(images, mean, std), train=False)",
       "return model.apply(variables, normalize(images, mean, mean), train=False)",
       (IMAGENET_RUN, "-k", "predict"), "predict divides by the mean instead of the std"),
    _m("C103", "predict_loads_scan_runs_as_scan", "sharesnet_jax/classifier.py",
       'model = build_model({**record.config, "stage_impl": "loop"}, record.num_classes)',
       "model = build_model(record.config, record.num_classes)",
       ("tests/cli/test_predict_inputs.py", "-k", "loads_a_run_trained_with_scan"),
       "a scan run's loop-layout variables meet a scanned model"),
    _m("C102", "predict_accepts_floats_up_to_255", PREDICT,
       "if not np.all(np.isfinite(pixels)) or pixels.min() < 0 or pixels.max() > 1:",
       "if not np.all(np.isfinite(pixels)) or pixels.min() < 0 or pixels.max() > 255:",
       ("tests/cli/test_predict_inputs.py", "-k", "scales_16_bit"), "floats beyond [0, 1] accepted"),
    _m("C102", "predict_clips_16_bit", PREDICT,
       "return np.round(pixels.astype(np.float64) * (255 / 65535)).astype(np.uint8)",
       "return np.clip(pixels, 0, 255).astype(np.uint8)", ("tests/cli/test_predict_inputs.py", "-k", "scales_16_bit"),
       "16-bit images clipped instead of scaled"),
    _m("C101", "predict_top_0_accepted", PREDICT, "if args.top < 1:", "if args.top < 0:",
       ("tests/cli/test_predict_inputs.py", "-k", "top_must_be_positive"), "--top=0 accepted"),
    _m("C100", "predict_stops_at_a_bad_file", PREDICT, "continue", "break",
       ("tests/test_predict.py", "-k", "command_line"),
       "an unreadable image stops the predictions of the others"),
    # Planner FLOPs and MAC counts.
    _m("C105", "planner_remat_counted_as_3_passes", PLANNER,
       'return 4 if model.remat_policy == "full" else 3', "return 3", (MACS, "-k", "planner"), "remat's second forward pass not counted"),
    _m("C105", "planner_eval_counted_as_3_passes", PLANNER,
       "return 2 * forward_macs(model, tuple(image_shape)) * per_device_batch",
       "return 2 * forward_macs(model, tuple(image_shape)) * per_device_batch * 3",
       (MACS, "-k", "planner"), "the eval step counted with a backward pass"),
    _m("C25", "macs_without_the_head", STATS,
       'if context.method_name == "__call__" and isinstance(module, (nn.Conv, nn.Dense)):',
       'if context.method_name == "__call__" and isinstance(module, nn.Conv):',
       (MACS, "-k", "by_hand"), "the classifier's MACs not counted"),
    _m("C25", "macs_per_pixel_not_per_output", STATS,
       "macs += math.prod(out.shape[1:]) * per_output",
       "macs += math.prod(out.shape[1:-1]) * per_output", (MACS, "-k", "by_hand"),
       "MACs of one output channel only"),
    _m("C14", "macs_ignore_the_kernel_size", STATS,
       "per_output = math.prod(kernel) * in_features", "per_output = in_features",
       (MACS, "-k", "torchvisions"), "every conv counted as a 1x1"),
    # Models: the sharing rule, counts, dtypes, modes.
    _m("C1", "block3_gets_its_own_3x3", STAGE,
       "conv=self.conv, norm=self.norm, share=self.share, block_index=index,",
       'conv=self.conv, norm=self.norm, share=self.share if index != 2 else "none", block_index=index,',
       ("tests/models/test_models.py", "-k", "lives_once"),
       "block 3 of each stage keeps its own 3x3"),
    _m("C2", "shared_kernel_gets_no_gradient", BLOCKS,
       'return conv(parent=None).apply({"params": {"kernel": shared_kernel}}, x)',
       'return conv(parent=None).apply({"params": {"kernel": jax.lax.stop_gradient(shared_kernel)}}, x)',
       ("tests/models/test_models.py", "-k", "tied_twin"),
       "the shared kernel's uses contribute no gradient"),
    _m("C22", "bottlenecks_share_nothing", BLOCKS, 'return ("conv2",) if strides == 1 else ()',
       "return ()", ("tests/models/test_models.py", "-k", "distinct_3x3"),
       "ImageNet bottlenecks share no 3x3"),
    _m("C22", "basic_imagenet_blocks_share_from_block_2", BLOCKS, 'return ("conv2",)',
       'return ("conv2",) if block_index > 0 else ()',
       ("tests/models/test_models.py", "-k", "distinct_3x3"),
       "ResNet-18/34 block 1 keeps its own second 3x3"),
    _m("C23", "share_all_skips_the_strided_3x3", STAGE,
       'return block.share == "all" and in_width == block.features',
       'return block.share == "all" and in_width == block.features and block.strides == 1',
       ("tests/models/test_share_modes.py",), "share='all' leaves the strided 3x3s unshared"),
    _m("C13", "head_without_bias", LAYERS,
       "x = nn.Dense(num_classes, dtype=dtype, param_dtype=param_dtype,",
       "x = nn.Dense(num_classes, use_bias=False, dtype=dtype, param_dtype=param_dtype,",
       ("tests/models/test_models.py", "-k", "exact_parameter_counts"),
       "the classifier without its bias: counts off the paper's"),
    _m("C15", "params_cli_never_matches", "sharesnet_jax/params.py",
       "match = plain.params == row.plain_params and shared.params == row.shared_params",
       "match = plain.params == row.shared_params",
       ("tests/models/test_models.py", "-k", "params_cli"), "the table's match column wrong"),
    _m("C18", "logits_in_the_compute_dtype", LAYERS, "return jnp.asarray(x, jnp.float32)",
       "return x", ("tests/models/test_models.py", "-k", "bfloat16"),
       "bfloat16 logits under bfloat16 compute"),
    _m("C19", "batchnorm_always_in_training_mode", LAYERS,
       "options = dict(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,",
       "options = dict(use_running_average=False, momentum=0.9, epsilon=1e-5, dtype=dtype,",
       ("tests/models/test_models.py", "-k", "training_mode_only"),
       "evaluation normalises with batch statistics"),
    _m("C20", "dropout_at_evaluation", BLOCKS,
       "y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)",
       "y = nn.Dropout(self.dropout_rate, deterministic=False)(y)",
       ("tests/models/test_models.py", "-k", "dropout_is_off"), "dropout also at evaluation"),
    _m("C30", "imagenet_conv_init_fan_in", INIT,
       'conv_kernel=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),',
       'conv_kernel=nn.initializers.variance_scaling(2.0, "fan_in", "normal"),',
       ("tests/models/test_init.py", "-k", "family_fan"),
       "the ImageNet nets' conv init uses fan_in instead of fb.resnet.torch's fan_out"),
    _m("C31", "classifier_init_variance", INIT,
       '_TORCH_LINEAR_WEIGHT = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")',
       '_TORCH_LINEAR_WEIGHT = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")',
       ("tests/models/test_init.py", "-k", "classifier"),
       "classifier U(+-sqrt(3/fan_in)) instead of Torch's U(+-1/sqrt(fan_in))"),
    _m("C21", "registry_error_without_the_list", "sharesnet_jax/models/registry.py",
       'raise ValueError(f"unknown model {name!r}{hint} (see sharesnet_jax.models.list_models())")',
       'raise ValueError(f"no such model {name!r}")',
       ("tests/models/test_models.py", "-k", "registry"), "an unknown name without a hint"),
    # The interop, the pipeline's evaluation shares, the trainer's failure paths.
    _m("C98", "shareify_takes_the_first_kernel", "sharesnet_jax/interop/shareify.py",
       "out[path] = jnp.asarray(kernels.mean(axis=0), leaf.dtype)",
       "out[path] = jnp.asarray(kernels[0], leaf.dtype)",
       ("tests/interop/test_convert.py", "-k", "shareify_copies"),
       "shareify keeps block 1's kernel instead of the mean"),
    _m("C97", "torch_conv_layout_transposed", "sharesnet_jax/interop/torchvision.py",
       "return array.transpose(2, 3, 1, 0)  # OIHW -> HWIO", "return array.transpose(3, 2, 1, 0)",
       ("tests/interop/test_convert.py", "-k", "round_trip_is_exact"),
       "torchvision kernels read with H and W swapped"),
    _m("C92", "eval_padding_counted", "sharesnet_jax/data/pipeline.py",
       "'mask': tf.constant(0.0, tf.float32),", "'mask': tf.constant(1.0, tf.float32),",
       ("tests/data/test_pipeline.py", "-k", "eval_covers"),
       "the padding of the last eval batch counted as examples"),
    _m("C82", "all_skipped_run_reports_results", TRAINER,
       "if step == plan.total_steps and skipped == step - start_step:", "if False:",
       ("tests/training/test_failures_mid_run.py", "-k", "every_step_skipped"),
       "a run whose every step was skipped writes results"),
    _m("C74", "every_process_locks_dot_lock", "sharesnet_jax/training/workdir_lock.py",
       'name = ".lock" if process_index == 0 else f".lock.{process_index}"', 'name = ".lock"',
       ("tests/training/test_lock_and_workdir.py", "-k", "lock_files_of_their_own"),
       "the processes of one run lock one file (issue 22 may move this line)"),
    _m("C72", "workdir_not_locked", "sharesnet_jax/training/workdir_lock.py",
       "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)", "pass",
       ("tests/training/test_lock_and_workdir.py", "-k", "second_run_on_a_locked"),
       "two runs on one workdir (issue 22 may move this line)"),
    _m("C81", "skipped_step_keeps_the_update", STEPS,
       "kept = state.replace(step=state.step + 1)", "kept = new_state",
       ("tests/training/test_fault_tolerance.py", "-k", "skip_nonfinite"),
       "skip_nonfinite keeps the non-finite update (train_step: update after issue 19)"),
    # The repository's own promises.
    _m("C8", "ci_runs_another_command", ".ci/run",
       'python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt -e ".[test,torch,tpu,onnx,gpu]" && python -m pytest -n 2 -q',
       'python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt -e ".[test,torch,tpu,onnx,gpu]" && python -m pytest -q',
       ("tests/test_repo.py", "-k", "ci_runs"), "CI no longer runs the README's command"),
    _m("C10", "slow_tests_selected_by_default", "pyproject.toml",
       "addopts = \"-m 'not slow and not accelerator'\"", "addopts = \"-m 'not accelerator'\"",
       ("tests/test_claims.py", "-k", "deselected_by_default"), "the slow tests run by default"),
    _m("C115", "harness_plants_a_repeated_line", "tests/mutations/run.py",
       "if len(hits) != 1:", "if not hits:", ("tests/test_claims.py", "-k", "harness_reports"),
       "the harness mutates the first of several equal lines instead of reporting it stale"),
    _m("C17", "models_import_tensorflow", STATS, "import math", "import math, tensorflow",
       ("tests/test_layout.py", "-k", "jax_only"), "the JAX-only layer pulls in TensorFlow"),
    _m("C116", "models_import_the_training_layer", STATS,
       "from sharesnet_jax.models.registry import family_of",
       "from sharesnet_jax.training.optim import OPTIMIZERS  # noqa: F401",
       ("tests/test_layout.py", "-k", "imports_respect"), "a lower layer imported from models/"),
]

MUTATIONS += [
    _m("C24", "strided_shared_3x3_subsampled", BLOCKS,
       'return conv(parent=None).apply({"params": {"kernel": shared_kernel}}, x)',
       'return self.conv(self.features, (3, 3), 1, padding=PAD_3X3, parent=None).apply({"params": {"kernel": shared_kernel}}, x)[:, ::strides, ::strides]',
       ("tests/models/test_models.py", "-k", "saves_parameters_not_compute"),
       "share='all' runs the strided shared 3x3 at stride 1 and subsamples: 4x its MACs"),
    _m("C9", "readme_default_command", "README.md",
       'python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt -e . && python -m sharesnet_jax.main --config=configs/default.py --workdir=/tmp/sharesnet',
       'python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt -e . && python -m sharesnet_jax.main --workdir=/tmp/sharesnet',
       ("tests/test_repo.py", "-k", "default_run_command"), "the README's quick start loses its config"),
    _m("C85", "labels_above_the_classes_pass", "sharesnet_jax/data/checks.py",
       "if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):",
       "if labels.size and labels.min() < 0:", ("tests/training/test_data_problems.py", "-k", "labels_outside"),
       "labels >= num_classes reach the loss"),
    _m("C76", "resume_never_compares_fields", "sharesnet_jax/training/validation.py",
       "if before != now:", "if False:", ("tests/training/test_resume_compatibility.py", "-k", "resume_with_another_config"),
       "a resume with another optimizer continues silently (issue 22 may move this line)"),
    _m("C75", "keep_checkpoints_not_resumable", "sharesnet_jax/training/validation.py",
       '"keep_checkpoints", "eval_only", "num_epochs", "num_train_steps", "data_dir", "download",',
       '"eval_only", "num_epochs", "num_train_steps", "data_dir", "download",',
       ("tests/training/test_resume_compatibility.py", "-k", "bookkeeping"), "changing keep_checkpoints refuses the resume"),
    _m("C99", "warm_start_without_shareify", "sharesnet_jax/training/warm_start.py",
       "shared, report = shareify(variables, name, share=model.share, **overrides)",
       'shared, report = variables, ""',
       ("tests/training/test_warm_start.py", "-k", "shared_model_starts"),
       "unshared weights handed to a shared model as they are"),
    _m("C71", "init_from_reads_only_the_newest", "sharesnet_jax/training/checkpoints.py",
       "for step_dir in step_directories(source):", "for step_dir in step_directories(source)[:1]:",
       ("tests/training/test_failures_mid_run.py", "-k", "init_from_a_workdir_with_a_truncated"),
       "init_from fails on a truncated newest checkpoint instead of using the previous"),
    _m("C87", "absent_dataset_without_how_to_prepare", "sharesnet_jax/data/sources.py",
       "raise ValueError(_absent_message(source)) from None",
       'raise ValueError(f"dataset {source.name!r} not found") from None',
       ("tests/data/test_pipeline.py", "-k", "absent_dataset"),
       "an absent dataset's error does not say how to prepare it"),
    _m("C89", "no_tensorboard_events", TRAINER,
       "writer = metric_writers.create_default_writer(workdir, just_logging=not _is_chief())",
       "writer = metric_writers.create_default_writer(workdir, just_logging=True)",
       ("tests/training/test_trainer.py", "-k", "digits_run_learns"),
       "process 0 writes no TensorBoard events"),
    _m("C96", "torch_linear_not_transposed", "sharesnet_jax/interop/torchvision.py",
       "return array.T  # (out, in) -> (in, out)", "return array",
       ("tests/interop/test_torchvision.py", "-k", "logits"),
       "torchvision's fc weight read untransposed"),
    _m("C70", "unreadable_checkpoint_stops_the_run", "sharesnet_jax/training/checkpoints.py",
       'self._set_aside(step, reason or "unreadable on another process")',
       "raise RuntimeError(reason)", ("tests/training/test_fault_tolerance.py", "-k", "unreadable"),
       "an unreadable newest checkpoint stops the run instead of being set aside"),
    _m("C77", "write_failure_without_its_cause", "sharesnet_jax/training/checkpoints.py",
       'reason = f"{cause.strerror or type(cause).__name__}" + (', 'reason = "error" + (',
       ("tests/training/test_failures_mid_run.py", "-k", "checkpoint_write_failure_is_one_line"),
       "a failed checkpoint write does not say why"),
    _m("C78", "full_disk_not_named", "sharesnet_jax/training/checkpoints.py",
       'reason = "disk full (no space left on device)"', 'reason = "write error"',
       ("tests/training/test_failures_mid_run.py", "-k", "full_disk"), "a full disk not named as such"),
]

MUTATIONS += [
    _m("C107", "all_reduce_counts_one_element_per_operand", "sharesnet_jax/preflight/hlo.py",
       'size = math.prod(int(d) for d in dims.split(",") if d)', "size = 1",
       ("tests/preflight/test_tpu.py", "-k", "all_reduce_bytes_counts_tuple"),
       "all-reduce bytes read as one element per operand"),
    _m("C106", "planner_flops_of_half_the_batch", PLANNER,
       "flops = train_flops_per_device(built.model, image_shape, batch)",
       "flops = train_flops_per_device(built.model, image_shape, batch // 2)",
       ("tests/preflight/test_tpu.py", "-k", "three_forward_passes"),
       "the plan's FLOPs for half the per-chip batch"),
]

MUTATIONS += [
    _m("C119", "synthetic_benchmark_reads_a_dataset", "configs/synthetic_benchmark.py",
       'c.dataset = "synthetic"', 'c.dataset = "digits"',
       (RECIPE_TESTS, "-k", "synthetic_benchmark"), "the benchmark config reads the digits"),
]

MUTATIONS += [
    _m("C113", "benchmark_state_not_donated", STEPS,
       "out_shardings=replicated, donate_argnums=(0,) if donate_state else ())",
       "out_shardings=replicated, donate_argnums=())",
       ("tests/test_performance.py", "-k", "donates"),
       "the train step keeps a second copy of the state"),
    # C114: step=0 (a Python int) in create_train_state was tried and is equivalent: the state
    # is created under jit, so the counter is an int32 array anyway. No mutation yet.
    # Issue 22 (reliability round 3).
    Mutation(
        "lock_follows_links", SAFE_FILES,
        "fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)",
        "fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)",
        ("tests/training/test_lock_and_workdir.py", "-k", "link_where_the_run_writes"),
        "the lock is opened through a link planted at .lock and truncates its target"),
    Mutation(
        "results_through_fixed_temporary", TRAINER,
        'legacy=("results.json.tmp",))',
        "legacy=())",
        ("tests/training/test_lock_and_workdir.py", "-k", "stale_temporaries"),
        "a link left at the old fixed temporary name survives the run"),
    Mutation(
        "checkpoints_link_followed", VALIDATION,
        "safe_files.refuse_link_or_file(os.path.join(workdir, name))",
        "pass",
        ("tests/training/test_lock_and_workdir.py", "-k", "link_where_the_run_writes"),
        "checkpoints/ as a link: Orbax writes (and prunes) in another user's directory"),
    Mutation(
        "none_field_accepted", VALIDATION,
        "if default is None:",
        "if True:",
        ("tests/training/test_bad_input.py", "-k", "every_field_is_typed and None"),
        "a None in a Python config file passes and fails later with a traceback"),
    Mutation(
        "seed_unbounded", VALIDATION,
        "if not 0 <= config.seed <= MAX_SEED:",
        "if False:",
        ("tests/training/test_bad_input.py", "-k", "every_field_is_typed and seed"),
        "a seed beyond 64 bits (or one that wraps onto another) is accepted"),
    Mutation(
        "decay_factor_above_one", VALIDATION,
        '_check_range(config, "lr_decay_factor", 0.0, 1.0, low_open=True)',
        '_check_range(config, "lr_decay_factor", 0.0)',
        ("tests/training/test_bad_input.py", "-k", "every_field_is_typed and lr_decay_factor"),
        "a decay factor above 1 (or 0) is accepted"),
    Mutation(
        "empty_eval_split_accepted", VALIDATION,
        "if info.num_eval_examples < 1:",
        "if False:",
        ("tests/training/test_data_problems.py", "-k", "data_problems and empty"),
        "an evaluation split of no examples fails only after training"),
    Mutation(
        "split_files_unchecked", SOURCES,
        "check_split_files(source, split)",
        "pass",
        ("tests/training/test_data_problems.py", "-k", "data_problems and eval and file"),
        "a truncated, missing or FIFO evaluation file is found after training"),
    Mutation(
        "failed_eval_loses_steps", TRAINER,
        "final = run_eval_or_save(step)",
        "final = run_eval(step)",
        ("tests/training/test_data_problems.py", "-k", "evaluation_that_fails"),
        "an evaluation that fails loses the steps since the last checkpoint"),
    Mutation(
        "lock_names_dead_holder", LOCK,
        "if text and _alive(text):",
        "if text:",
        ("tests/training/test_lock_and_workdir.py", "-k", "dead_holder"),
        "a refusal names a holder that is no longer alive"),
    Mutation(
        "predict_opens_fifo_blocking", PREDICT,
        "fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)",
        "fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)",
        ("tests/cli/test_predict_inputs.py", "-k", "predict_refuses_special"),
        "predict on a FIFO blocks forever"),
    Mutation(
        "predict_bomb_unchecked", PREDICT,
        "if width * height > MAX_PIXELS:",
        "if False:",
        ("tests/cli/test_predict_inputs.py", "-k", "predict_refuses_special"),
        "an image of 121 megapixels is decoded (PIL only warns below twice its limit)"),
    Mutation(
        "renamed_step_resumed", TRAINER,
        "if int(state.step) != step:",
        "if False:",
        ("tests/training/test_resume_compatibility.py", "-k", "renamed_step"),
        "a step directory renamed to another number resumes with a wrong step"),
    Mutation(
        "workdir_root_accepted", VALIDATION,
        "if os.path.dirname(path) == path:",
        "if False:",
        ("tests/training/test_bad_input.py", "-k", "filesystem_root"),
        "--workdir=/ is accepted"),
]


STEP_TESTS = "tests/training/test_gradient_reduce.py"
BATCH_NORM = "sharesnet_jax/models/batch_norm.py"
# Issue 19: the once-per-parameter reduce, remat_policy, BatchNorm groups over devices.
MUTATIONS += [
    _m("C112", "batch_norm_statistics_per_device", STEPS,
       "synced = model.clone(norm_axis_name=axis)", "synced = model",
       (STEP_TESTS, "-k", "reference"),
       "under shard_map each device normalises with its own shard's statistics"),
    _m("C125", "gradient_reduced_per_use_on_tpu", STEPS,
       "value_and_grad = _data_parallel_grads(model, mesh or sharding.make_data_mesh(),",
       "value_and_grad = (lambda *a: _value_and_grad(model, label_smoothing, *a)) if True "
       "else _data_parallel_grads(model, mesh,",
       ("tests/preflight/test_tpu.py", "-k", "gradients_all_reduced_once_in_the_chosen_dtype"),
       "left to the partitioner on TPU, a shared kernel's bfloat16 gradient is reduced once per use"),
    _m("C126", "dropout_key_shared_by_devices", STEPS,
       "dropout_rng = jax.random.fold_in(dropout_rng, jax.lax.axis_index(axis))",
       "dropout_rng = dropout_rng", (STEP_TESTS, "-k", "dropout"),
       "every device draws the same dropout masks for its shard"),
    _m("C127", "conv_outputs_saves_nothing", STAGE,
       "jax.checkpoint_policies.dots_saveable, _saves_collectives),",
       "jax.checkpoint_policies.nothing_saveable, _saves_collectives),",
       ("tests/models/test_scan.py", "-k", "recomputes_what_it_says"),
       "remat_policy='conv_outputs' recomputes the convolutions too"),
    _m("C128", "legacy_remat_ignored", CONFIG,
       'return policy if policy is not None else ("full" if legacy else "none")',
       'return policy if policy is not None else "none"',
       ("tests/training/test_remat_config.py", "-k", "gets_the_policy_the_fields_name"),
       "remat=True no longer rematerialises"),
    _m("C148", "remat_contradiction_accepted", CONFIG,
       "if policy is not None and (policy != \"none\") != legacy:", "if False:",
       ("tests/training/test_remat_config.py", "-k", "contradicting_fields"),
       "remat=True with remat_policy='none' runs, one of the two fields silently ignored"),
    _m("C129", "batch_norm_groups_over_all_devices", BATCH_NORM,
       "mean, mean_square = jax.lax.pmean(moments, self.axis_name, axis_index_groups=groups)",
       "mean, mean_square = jax.lax.pmean(moments, self.axis_name)",
       ("tests/training/test_trainer.py", "-k", "8_devices"),
       "a BatchNorm group meant to span two devices takes the statistics of all of them"),
]

# Issue 20: claims that had no mutation (tests by claim).
MUTATIONS += [
    _m("C5", "scan_tail_drops_shared_kernel", STAGE,
       "conv=self.conv, norm=self.norm, share=self.share, block_index=index,",
       'conv=self.conv, norm=self.norm, share="none" if scanned else self.share, block_index=index,',
       ("tests/models/test_scan.py", "-k", "scan_equals_loop"),
       "the scanned blocks 2..n get their own 3x3s instead of the stage's shared one"),
    _m("C33", "trainer_batch_norm_per_device", STEPS,
       "synced = model.clone(norm_axis_name=axis)", "synced = model",
       ("tests/training/test_trainer.py", "-k", "8_devices_matches_1_device"),
       "the trainer's step normalises each device's shard with its own statistics"),
    _m("C83", "infinite_value_accepted", VALIDATION,
       "if not (math.isfinite(value) and above and below):", "if not (above and below):",
       ("tests/training/test_bad_input.py", "-k", "bad_value_is_one_line"),
       "learning_rate=inf (or weight_decay=inf) passes the check and fails during training"),
    _m("C84", "batch_not_divisible_accepted", VALIDATION,
       "if value < 1 or value % devices:", "if value < 1:",
       ("tests/training/test_fault_tolerance.py", "-k", "batch_not_divisible"),
       "a global batch that does not divide over the devices reaches the sharding"),
    _m("C104", "predict_softmax_over_the_batch", PREDICT,
       "return np.asarray(jax.nn.softmax(self.logits(images), axis=-1))",
       "return np.asarray(jax.nn.softmax(self.logits(images), axis=0))",
       ("tests/test_predict.py", "-k", "any_size_to_probabilities"),
       "probabilities normalised over the images instead of the classes"),
    _m("C123", "benchmark_worker_unlimited", "benchmarks/common.py",
       "done = subprocess.run(command, capture_output=True, text=True, timeout=max(timeout_s, 1))",
       "done = subprocess.run(command, capture_output=True, text=True)",
       ("tests/test_performance.py", "-k", "past_its_time_limit"),
       "a measurement's time limit is never applied: a hung worker hangs the benchmark"),
    _m("C68", "set_up_signal_unwatched", "sharesnet_jax/main.py",
       "preemption.watch_early()  # SIGTERM during set-up: a clean exit 0, not a silent 143",
       "pass", ("tests/cli/test_main_cli.py", "-k", "sigterm_during_set_up"),
       "a SIGTERM before the trainer's watch begins kills the process (exit 143, no line)"),
    _m("C73", "lock_file_content_means_held", LOCK,
       "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)",
       'if os.pread(fd, 1, 0): raise OSError("the lock file names a holder")',
       ("tests/training/test_lock_and_workdir.py", "-k", "stale_lock_of_a_dead_run"),
       "a pid-file lock: the file a dead run leaves blocks every later run"),
    _m("C86", "data_loss_error_escapes", "sharesnet_jax/data/checks.py",
       "except (tf.errors.DataLossError, tf.errors.InvalidArgumentError, tf.errors.NotFoundError,",
       "except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError,",
       ("tests/training/test_data_problems.py", "-k", "truncated_dataset_files"),
       "a truncated TFRecord's DataLossError escapes as a traceback"),
    _m("C94", "join_timeout_exits_the_thread_only", "sharesnet_jax/training/cluster.py",
       "os._exit(1)  # Not sys.exit: JAX's exit handlers would wait for the missing processes.",
       "sys.exit(1)",
       ("tests/training/test_multihost.py", "-k", "cannot_join_fails_in_one_line"),
       "the give-up timer's sys.exit ends only its thread: the process waits on, then aborts"),
    _m("C95", "one_task_slurm_step_waits_for_a_cluster", "sharesnet_jax/training/cluster.py",
       'slurm = slurm_step and int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", 1))) > 1',
       'slurm = slurm_step and int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", 1))) >= 1',
       ("tests/training/test_multihost.py", "-k", "lone_process_never_waits"),
       "a one-task srun step initialises jax.distributed and waits for a cluster"),
    _m("C120", "plan_table_ignores_legacy_remat", "benchmarks/aot_plan_table.py",
       'policy = self.flag("remat_policy") or ("full" if self.flag("remat") == "True" else "none")',
       'policy = self.flag("remat_policy") or "none"',
       ("tests/preflight/test_tpu.py", "-k", "table_script_reads"),
       "the README table calls a --config.remat=True run unrematerialised"),
    _m("C121", "throughput_counts_the_whole_state", "benchmarks/common.py",
       "params = count_params(bench.state.params)", "params = count_params(bench.state)",
       ("tests/test_performance.py", "-k", "scripts_print_their_tables"),
       "the params column counts the optimizer state and BatchNorm statistics too"),
    _m("C122", "benchmark_imports_the_tfds_pipeline", "benchmarks/common.py",
       "from sharesnet_jax.data import synthetic  # noqa: E402",
       "from sharesnet_jax.data import pipeline, synthetic  # noqa: E402,F401",
       ("tests/test_performance.py", "-k", "gpu_bench_smoke"),
       "the benchmarks import the tf.data pipeline: gpu_bench needs TensorFlow"),
    _m("C108", "does_not_fit_names_the_global_batch", FIT,
       'head = (f"{config.model} at {per_device_batch} images per {unit} needs "',
       'head = (f"{config.model} at {per_device_batch * n} images per {unit} needs "',
       ("tests/preflight/test_tpu.py", "-k", "over_capacity_exits_1"),
       "the refusal names the global batch as the per-chip one"),
    _m("C88", "imagenet_eval_crop_unscaled", AUGMENT,
       "image = to_uint8(center_crop(scale_shorter_side(image, shorter_side), hw))",
       "image = to_uint8(center_crop(image, hw))",
       ("tests/training/test_trainer.py", "-k", "paper_datasets and imagenet2012"),
       "ImageNet evaluation crops the centre of the unscaled image (of any size)"),
]

# Issue 20, the last claims without a mutation.
QUICKSTART = "colab/quickstart.ipynb"
MUTATIONS += [
    _m("C4", "remat_drops_block_options", STAGE,
       "name=name, **self.block_options)",
       "name=name, **(self.block_options if block_cls is self.block else {}))",
       ("tests/models/test_scan.py", "-k", "remat_changes_nothing_but_memory"),
       "a rematerialised block loses the family's options (its dropout): remat changes values"),
    _m("C7", "default_run_trained_half_an_epoch", "configs/default.py",
       "c.num_epochs = 15.0", "c.num_epochs = 0.5",
       ("tests/training/test_trainer.py", "-m", "slow", "-k", "readme_accuracy"),
       "the default config trains half an epoch: far below the README's 97%"),
    _m("C11", "quickstart_fallback_reads_cifar10", QUICKSTART,
       '"    DATASET = \\"digits\\"\\n",', '"    DATASET = \\"cifar10\\"\\n",',
       ("tests/test_notebooks.py", "-k", "quickstart_runs_offline"),
       "offline, the quickstart says it falls back to the digits but trains on CIFAR-10, "
       "which is not there"),
    _m("C12", "quickstart_committed_with_an_output", QUICKSTART,
       '"print(f\\"smoke test: {SMOKE}, offline: {OFFLINE}, runs go to {WORK_ROOT}\\")"',
       '"print(f\\"smoke test: {SMOKE}, offline: {OFFLINE}, runs go to {WORK_ROOT}\\")"], '
       '"outputs": [{"name": "stdout", "output_type": "stream", '
       '"text": ["smoke test: False, offline: False, runs go to /content\\n"]}], '
       '"source": ["print(f\\"smoke test: {SMOKE}, offline: {OFFLINE}, runs go to {WORK_ROOT}\\")"',
       ("tests/test_notebooks.py", "-k", "committed_notebooks_have_no_outputs"),
       "a code cell of the quickstart is committed with its printed output"),
    _m("C39", "eval_only_trains_on", TRAINER,
       "if config.eval_only:", "if False:",
       ("tests/training/test_multihost.py", "-k", "sigterm_to_one_process"),
       "eval_only=True trains the checkpoint on to the end instead of evaluating it"),
    _m("C39", "eval_only_evaluates_a_fresh_model", TRAINER,
       "return state, step, run_eval(step)",
       "return state, step, evaluate(run.eval_step, create_replicated_state(run.model, run.tx, "
       "config.seed, info.image_shape, mesh), eval_batches(config, info, mesh, plan))",
       ("tests/training/test_multihost.py", "-k", "sigterm_to_one_process"),
       "eval_only=True restores the checkpoint but evaluates a freshly initialised model"),
    _m("C65", "resume_resets_the_optimizer_state", TRAINER,
       "step, state = restored",
       "step, state = restored[0], restored[1].replace(opt_state=state.opt_state)",
       ("tests/training/test_fault_tolerance.py", "-k", "killed_anywhere"),
       "a resumed run restarts its momentum from zero: it ends close to, not bit-identical "
       "with, an uninterrupted run"),
    _m("C93", "each_process_seeds_its_own_init", TRAINER,
       "state = create_replicated_state(run.model, run.tx, config.seed, info.image_shape, run.mesh)",
       "state = create_replicated_state(run.model, run.tx, config.seed + jax.process_index(), "
       "info.image_shape, run.mesh)",
       ("tests/training/test_multihost.py", "-k", "two_processes_match_one_process"),
       "each process initialises its replica of the state from its own seed"),
    _m("C114", "step_counter_becomes_float", STEPS,
       "new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,",
       "new_state = state.replace(step=state.step + 1.0, params=params, batch_stats=batch_stats,",
       ("tests/test_performance.py", "-k", "trainer_traces_its_train_step_once"),
       "the step returns a float32 step counter for an int32 one: the second call retraces"),
    _m("C124", "shared_twin_unshared", STAGE,
       "return slot in block.paper_shared_slots(block.block_index, block.strides)",
       "return False",
       ("tests/preflight/test_tpu.py", "-k", "shared_twin_all_reduces"),
       "the shared twin builds its own 3x3 per block: it all-reduces as much as the plain one"),
    # Issue 21: the pre-flight layer's GPU targets, JSON and bounded fit search.
    _m("C149", "gpu_topology_hosts_ignored", GPU_PLANNER,
       'platform="cuda", target_config=target_config, topology=f"1x{hosts}x{per_host}")',
       'platform="cuda", target_config=target_config, topology=f"1x1x{per_host * hosts}")',
       ("tests/preflight/test_gpu.py", "-k", "two_hosts"),
       "two hosts of eight GPUs planned as one host of sixteen"),
    _m("C150", "gpu_usable_memory_is_the_whole_gpu", GPU_PLANNER,
       "int(fraction * model.memory_bytes), model.memory_bandwidth, model.nvlink_bandwidth,",
       "model.memory_bytes, model.memory_bandwidth, model.nvlink_bandwidth,",
       ("tests/preflight/test_gpu.py", "-k", "over_capacity"),
       "the GPU planner ignores JAX's 75% preallocation"),
    _m("C150", "fit_suggestion_never_compiled", FIT,
       "if candidate >= 1 and search:",
       "if candidate >= 1 and not search:",
       ("tests/preflight/test_gpu.py", "-k", "over_capacity"),
       "the suggested batch is never compiled to confirm it"),
    _m("C150", "gpu_capacity_not_checked", "sharesnet_jax/preflight/compile.py",
       "if capacity is not None and memory.total > capacity:",
       "if False:",
       ("tests/preflight/test_gpu.py", "-k", "over_capacity"),
       "a GPU step beyond the usable memory is reported as fitting (XLA does not refuse it)"),
    _m("C151", "unknown_gpu_lists_nothing", TARGETS,
       'f"GPU:HOSTSxN with a GPU among {\', \'.join(gpu.GPUS)} (e.g. "',
       'f"GPU:HOSTSxN (e.g. "',
       ("tests/preflight/test_gpu.py", "-k", "bad_gpu_topologies"),
       "an unknown GPU name does not list the known ones"),
    _m("C152", "missing_gpu_extra_unchecked", GPU_PLANNER,
       "    require_cuda_plugin()",
       "    pass",
       ("tests/preflight/test_gpu.py", "-k", "missing_gpu_extra"),
       "without the CUDA plugin the planner fails deep in XLA, not in one line"),
    _m("C153", "gpu_ring_ignores_the_network", ACCELERATORS,
       "if self.hosts > 1 and self.accelerator.network_bandwidth:",
       "if False and self.accelerator.network_bandwidth:",
       ("tests/preflight/test_gpu.py", "-k", "two_hosts"),
       "a ring across GPU hosts is estimated at NVLink speed"),
    _m("C154", "memory_fraction_env_ignored", GPU_PLANNER,
       'text = os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION")',
       "text = None",
       ("tests/preflight/test_gpu.py", "-k", "memory_fraction"),
       "XLA_PYTHON_CLIENT_MEM_FRACTION is ignored"),
    _m("C155", "json_table_on_stdout_too", "sharesnet_jax/aot.py",
       'print(preflight.format_plan(result), file=sys.stderr if _JSON.value == "-" else sys.stdout)',
       "print(preflight.format_plan(result))",
       ("tests/preflight/test_gpu.py", "-k", "json_on_stdout"),
       "--json=- mixes the table into the JSON on stdout"),
    _m("C156", "training_imports_preflight", "sharesnet_jax/training/trainer.py",
       "from sharesnet_jax.training.device_checks import check_fits_device",
       "from sharesnet_jax.preflight.tpu import check_fits_device  # noqa",
       ("tests/test_layout.py", "-k", "preflight_builds_on_training"),
       "training reaches into the planner layer"),
    _m("C157", "json_link_checked_only_after_the_compile", "sharesnet_jax/aot.py",
       "safe_files.refuse_unless_regular(_JSON.value)", "pass",
       ("tests/preflight/test_tpu.py", "-k", "json_through_a_link"),
       "a --json link is found only after minutes of compiling"),
    _m("C157", "json_directory_unchecked", "sharesnet_jax/aot.py",
       "if not os.path.isdir(directory):", "if False:",
       ("tests/preflight/test_tpu.py", "-k", "json_through_a_link"),
       "a --json path in a missing directory fails only after the compile"),
]

# Issue 22's mutations (the last list above) and the claims they break.
_ROUND3_CLAIMS = {
    "lock_follows_links": "C138", "results_through_fixed_temporary": "C139", "checkpoints_link_followed": "C138",
    "none_field_accepted": "C140", "seed_unbounded": "C140", "decay_factor_above_one": "C140",
    "empty_eval_split_accepted": "C141", "split_files_unchecked": "C141", "failed_eval_loses_steps": "C142",
    "lock_names_dead_holder": "C143", "predict_opens_fifo_blocking": "C144", "predict_bomb_unchecked": "C144",
    "renamed_step_resumed": "C145", "workdir_root_accepted": "C146",
}
MUTATIONS = [dataclasses.replace(m, claim=_ROUND3_CLAIMS.get(m.name, m.claim)) for m in MUTATIONS]

def copy_repository(destination: pathlib.Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=ignore)
        elif source.exists():
            shutil.copy2(source, destination / name)


def apply(mutation: Mutation, root: pathlib.Path) -> str | None:
    """Replaces the line in the copy; returns None, or why it could not ("stale ...")."""
    path = root / mutation.file
    if not path.exists():
        return f"stale: {mutation.file} does not exist"
    lines = path.read_text().splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.strip() == mutation.original.strip()]
    if len(hits) != 1:
        return f"stale: original line found {len(hits)} times in {mutation.file}"
    line = lines[hits[0]]
    indent = line[:len(line) - len(line.lstrip())]
    lines[hits[0]] = indent + mutation.replacement.strip() + "\n"
    path.write_text("".join(lines))
    return None


def missing_test_files(mutation: Mutation, root: pathlib.Path) -> list[str]:
    files, skip_next = [], False
    for argument in mutation.tests:
        if skip_next:
            skip_next = False
            continue
        if argument in ("-k", "-m"):
            skip_next = True
            continue
        if argument.startswith("-"):
            continue
        if not (root / argument.split("::")[0]).exists():
            files.append(argument)
    return files


def run_pytest(root: pathlib.Path, arguments: tuple[str, ...], timeout: float) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(root)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    command = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider",
               *arguments]
    try:
        result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired as error:
        output = error.stdout or ""
        return -1, output if isinstance(output, str) else output.decode(errors="replace")
    return result.returncode, result.stdout + result.stderr


def imported_from(root: pathlib.Path) -> str:
    result = subprocess.run([sys.executable, "-c", "import sharesnet_jax; print(sharesnet_jax.__file__)"],
                            cwd=root, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(root)))
    return result.stdout.strip()


def failed_tests(output: str) -> list[str]:
    """The node ids pytest reported as FAILED or ERROR (collection errors name the file)."""
    # Parametrization ids may hold spaces ("test_x[{'a': 1}]"): up to the " - " of the reason.
    return re.findall(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", output, re.MULTILINE)


def _short(node_ids) -> str:
    """Test functions with how many of their parametrizations failed: `test_x (3)`."""
    counts: dict[str, int] = {}
    for node in node_ids:
        function = node.split("::", 1)[-1].split("[")[0]
        counts[function] = counts.get(function, 0) + 1
    return ", ".join(f"{f} ({n})" if n > 1 else f for f, n in sorted(counts.items()))


def claim_ids(claims_file: pathlib.Path = ROOT / "tests" / "CLAIMS.md") -> list[str]:
    """The claim ids (first column, e.g. C12) of the inventory's table rows."""
    if not claims_file.exists():
        return []
    return re.findall(r"^\|\s*(C\d+)\s*\|", claims_file.read_text(), re.MULTILINE)


def claim_tests(claims_file: pathlib.Path = ROOT / "tests" / "CLAIMS.md") -> dict[str, str]:
    """{claim id: its test's file::function}."""
    if not claims_file.exists():
        return {}
    return dict(re.findall(r"^\|\s*(C\d+)\s*\|.*\|\s*(\S+::\S+)\s*\|\s*$",
                           claims_file.read_text(), re.MULTILINE))


# Test files whose whole run costs about what any selection of them costs (the import, or one
# module fixture): their baseline is run once for the file, whatever -k each mutation adds.
WHOLE_FILE_BASELINE = frozenset({
    "tests/data/test_augment_geometry.py", "tests/data/test_augment.py",
    "tests/data/test_dataset_statistics.py", "tests/training/test_schedule_and_optimizer.py",
    "tests/training/test_eval_metrics.py", "tests/training/test_config_recipes.py",
    "tests/training/test_imagenet_style_run.py", "tests/models/test_macs_and_flops.py",
    "tests/models/test_share_modes.py", "tests/models/test_init.py",
})


def baseline_selection(tests: tuple[str, ...]) -> tuple[str, ...]:
    """The selection whose unmutated run decides which of `tests` may catch: the files alone
    when each is in WHOLE_FILE_BASELINE (a superset of the tests), else `tests` itself."""
    files = tuple(a for a in tests if not a.startswith("-") and a.endswith(".py"))
    rest = [a for a in tests if a not in files]
    if files and all(f in WHOLE_FILE_BASELINE for f in files) and (rest[:1] == ["-k"]
                                                                  and len(rest) == 2):
        return files
    return tests


class Baselines:
    """Each selection run once on an unmutated copy: the tests that fail there cannot catch."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self._copy: pathlib.Path | None = None
        self._results: dict[tuple[str, ...], tuple[int, set[str]]] = {}

    def of(self, tests: tuple[str, ...]) -> tuple[int, set[str]]:
        tests = baseline_selection(tests)
        if tests not in self._results:
            if self._copy is None:
                self._copy = pathlib.Path(tempfile.mkdtemp(prefix="mutation_baseline_"))
                copy_repository(self._copy)
            rc, output = run_pytest(self._copy, tests, self.timeout)
            self._results[tests] = (rc, set(failed_tests(output)))
        return self._results[tests]

    def close(self) -> None:
        if self._copy is not None:
            shutil.rmtree(self._copy, ignore_errors=True)


def verdict(rc: int, failed: set[str], baseline_rc: int, baseline_failed: set[str]) -> str:
    if baseline_rc == 5:
        return "no tests selected"
    if baseline_rc == -1:
        return "baseline timeout"
    if rc == -1:
        return "timeout"
    if rc == 0:
        return "MISSED"
    if rc == 5:
        return "no tests selected"
    if failed - baseline_failed:
        return "caught" if rc == 1 else f"caught (pytest rc {rc})"
    if baseline_failed:
        return f"MISSED (only tests failing unmutated too: {_short(baseline_failed)})"
    return f"MISSED (pytest rc {rc} without a failing test)"


def run_one(mutation: Mutation, timeout: float, baselines: Baselines, keep: bool) -> dict:
    started = time.monotonic()
    row = {"name": mutation.name, "claim": mutation.claim, "tests": " ".join(mutation.tests),
           "by": "", "claim_test": "-"}
    workdir = pathlib.Path(tempfile.mkdtemp(prefix=f"mutation_{mutation.name}_"))
    try:
        copy_repository(workdir)
        missing = missing_test_files(mutation, workdir)
        if missing:
            row["result"] = f"test file missing: {', '.join(missing)}"
            return row
        problem = apply(mutation, workdir)
        if problem:
            row["result"] = problem
            return row
        where = imported_from(workdir)
        if not where.startswith(str(workdir)):
            row["result"] = f"error: the copy is not imported ({where})"
            return row
        baseline_rc, baseline_failed = baselines.of(mutation.tests)
        rc, output = run_pytest(workdir, mutation.tests, timeout)
        failed = set(failed_tests(output))
        row["result"] = verdict(rc, failed, baseline_rc, baseline_failed)
        row["by"] = _short(failed - baseline_failed)
        claim_test = claim_tests().get(mutation.claim, "")
        row["claim_test"] = "yes" if claim_test and any(
            n.split("[")[0] == claim_test for n in failed - baseline_failed) else "no"
        row["output"] = output
        return row
    finally:
        row["seconds"] = time.monotonic() - started
        if keep:
            row["copy"] = str(workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], help="run only this mutation")
    parser.add_argument("--claim", action="append", default=[],
                        help="run only the mutations of this claim id")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--uncovered", action="store_true",
                        help="list the claims of tests/CLAIMS.md that no mutation breaks")
    parser.add_argument("--baseline", action="store_true",
                        help="accepted for old command lines: the baseline always runs now")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per pytest run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    parser.add_argument("--verbose", action="store_true", help="print pytest's output tails")
    args = parser.parse_args(argv)

    names = {m.name for m in MUTATIONS}
    unknown = [n for n in args.only if n not in names]
    if unknown:
        parser.error(f"unknown mutation(s) {unknown}; known: {sorted(names)}")
    if args.uncovered:
        covered = {m.claim for m in MUTATIONS}
        missing = [c for c in claim_ids() if c not in covered]
        print(f"{len(missing)} claims without a mutation: {', '.join(missing) or '-'}")
        return 1 if missing else 0
    selected = [m for m in MUTATIONS if (not args.only or m.name in args.only)
                and (not args.claim or m.claim in args.claim)]
    if args.list:
        for m in selected:
            print(f"{m.name} [{m.claim}]: {m.file}: {m.why}\n    tests: {' '.join(m.tests)}")
        return 0

    rows, baselines = [], Baselines(args.timeout)
    try:
        for mutation in selected:
            print(f"... {mutation.name} ({' '.join(mutation.tests)})", file=sys.stderr, flush=True)
            row = run_one(mutation, args.timeout, baselines, args.keep)
            rows.append(row)
            print(f"    {row['result']} in {row['seconds']:.0f} s {row['by']}", file=sys.stderr,
                  flush=True)
            if args.verbose and "output" in row:
                print(row["output"][-3000:], file=sys.stderr)
    finally:
        baselines.close()

    print("| mutation | claim | tests | result | caught by | by the claim's test | time (s) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['name']} | {row['claim']} | {row['tests']} | {row['result']} | "
              f"{row['by']} | {row['claim_test']} | {row['seconds']:.0f} |")
    bad = [r for r in rows if not r["result"].startswith("caught")]
    stale = [r for r in bad if r["result"].startswith("stale")]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} mutations caught, {len(stale)} stale, "
          f"{len(bad) - len(stale)} missed or not run", end="")
    print(f"; not caught: {', '.join(r['name'] + ' (' + r['result'] + ')' for r in bad)}"
          if bad else "")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""The train step reduces each parameter's gradient across the data axis once per step, in the
chosen dtype, after its uses are summed on each device: measured on the compiled program of 8
fake CPU devices (tests/training/_gradient_reduce_probe.py runs in a fresh process, because the
device count must be set before jax imports).

Expected values by hand: a float32 step all-reduces 4 B x parameters, plus BatchNorm's float32
statistics (each BatchNorm's mean and mean square, forward and backward: 2 x 4 B per
statistic), plus the loss and one scalar. A shared kernel used k times is ONE parameter tensor,
so the shared twin sends 4 B less per removed parameter. Left to the partitioner (replicated
parameters under plain jit) the step sends a shared kernel's gradient once per use, and the
twins send nearly the same bytes.
"""

import functools
import json
import subprocess
import sys

import pytest

from sharesnet_jax.models.stats import abstract_variables, count_params
from tests.helpers import ROOT
from tests.training._gradient_reduce_probe import tiny

SCALARS = 8  # bytes: the loss's pmean and one more float32 scalar, seen in every layout
PROBE = "tests.training._gradient_reduce_probe"


@functools.cache
def probe(part: str):
    result = subprocess.run([sys.executable, "-m", PROBE, part], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["cifar_resnet20", "cifar_sharesnet20"])
def test_each_gradient_is_all_reduced_once_in_every_layout(name):
    rows = probe(name)
    for row in rows:
        where = f"{row['model']} {row['impl']} remat_policy={row['policy']} {row['dtype']}"
        statistics = 2 * 4 * row["statistics"]
        if row["dtype"] == "float32":
            assert row["compiled"] == {"f32": 4 * row["params"] + statistics + SCALARS}, where
        else:
            # Before the backend: the gradients go out in bfloat16, the statistics in float32.
            assert row["lowered"]["bf16"] == 2 * row["params"], where
            assert row["lowered"]["f32"] == statistics + 4, where
            # XLA:CPU promotes a bfloat16 all-reduce to float32; the elements stay the same.
            assert row["compiled_elements"] == row["params"] + 2 * row["statistics"] + 2, where


def test_the_shared_twin_sends_its_removed_parameters_less():
    """With the byte counts above exact for both twins, the saving is 4 B (float32) or 2 B
    (bfloat16) per removed parameter; the removed parameters by hand: per stage, blocks 2 and 3
    apply one shared 3x3 kernel instead of owning two (widths 4, 8, 8)."""
    plain, shared = (count_params(abstract_variables(tiny(name))["params"])
                     for name in ("cifar_resnet20", "cifar_sharesnet20"))
    assert plain - shared == 9 * (4 * 4 + 8 * 8 + 8 * 8)


def test_updates_equal_a_single_device_float32_reference():
    """8 devices against the textbook global-batch step on one device: float32 reduction to
    rounding (1e-4 of the largest update); bfloat16 within 2e-2 (8-bit mantissa), and visibly
    rounded (so the dtype really took effect)."""
    gaps = probe("gaps")
    assert gaps["float32"] < 1e-4, gaps
    assert 1e-4 < gaps["bfloat16"] < 2e-2, gaps
    # BatchNorm's running statistics are those of the global batch in both modes.
    assert gaps["float32 batch_stats"] < 1e-5 and gaps["bfloat16 batch_stats"] < 1e-5, gaps


def test_every_example_draws_its_own_dropout_mask():
    assert probe("gaps")["dropout masks per example"] is True

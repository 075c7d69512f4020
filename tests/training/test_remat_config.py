"""`remat_policy` in configs and records: the older boolean `remat` still means what it meant
(True: recompute whole blocks, 'full'), records written before `remat_policy` existed rebuild
the model they trained, and a contradiction is one line before any work."""

import pytest

from sharesnet_jax.errors import UserError
from sharesnet_jax.training import validation
from sharesnet_jax.training.config import base_config
from sharesnet_jax.training.run_setup import build_model
from tests.helpers import tiny_config


@pytest.mark.parametrize("remat, policy, expected", [
    (None, None, "none"), (True, None, "full"), (False, None, "none"),
    (None, "conv_outputs", "conv_outputs"), (True, "full", "full"), (False, "none", "none")])
def test_the_model_gets_the_policy_the_fields_name(remat, policy, expected):
    config = tiny_config(remat=remat, remat_policy=policy)
    validation.check_config(config)
    assert build_model(config, 10).remat_policy == expected


def test_a_record_from_before_remat_policy_rebuilds_its_model():
    """An old record has no remat_policy; reading it fills the schema's defaults
    (checkpoints.read_checkpoint), which leaves the boolean to decide."""
    old = {key: value for key, value in tiny_config(remat=True).to_dict().items()
           if key != "remat_policy"}
    record = {**base_config().to_dict(), **old}
    assert build_model(record, 10).remat_policy == "full"


@pytest.mark.parametrize("remat, policy", [(True, "none"), (False, "full"),
                                           (False, "conv_outputs")])
def test_contradicting_fields_are_refused_in_one_line(remat, policy):
    with pytest.raises(UserError, match=rf"^remat={remat!r} contradicts "
                                        rf"remat_policy='{policy}': set only remat_policy"):
        validation.check_config(tiny_config(remat=remat, remat_policy=policy))


def test_an_unknown_policy_names_the_choices():
    with pytest.raises(UserError, match="remat_policy='some' is not one of 'none', "
                                        "'conv_outputs', 'full'"):
        validation.check_config(tiny_config(remat_policy="some"))

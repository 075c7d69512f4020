"""What may change between runs in one workdir: a resumed run refuses a config field that would
make it another run (moving nothing), keeps the run for bookkeeping changes, refuses a renamed
step directory and says when the device count changed."""

import os

import pytest

from sharesnet_jax import train
from sharesnet_jax.errors import UserError
from tests.small_run import _edit_records, _fingerprint_of_files, _one_line, _refused, small


# --------------------------------------------------------------------------------------------
# Resuming: a readable checkpoint of another config refuses, in one line, and moves nothing.

REFUSED_CHANGES = [
    (dict(optimizer="adamw"), r"the checkpoint in \S+ was written with another config "
                              r"\(optimizer='sgd' there, 'adamw' now\): rerun with"),
    (dict(share="all"), r"has no entry \S+: it was written by a different model or config; .*"
                        r"\(share=None there, 'all' now\)"),
    (dict(batch_size=16, seed=1, dtype="bfloat16", learning_rate=0.1),
     r"\(batch_size=32 there, 16 now; dtype='float32' there, 'bfloat16' now; learning_rate=0.05 "
     r"there, 0.1 now; seed=0 there, 1 now\)"),
    (dict(num_train_steps=2), r"holds step 4, past this run's 2 steps"),
]


@pytest.mark.parametrize("fields,message", REFUSED_CHANGES, ids=lambda v: str(v)[:40])
def test_resume_with_another_config_refuses_and_moves_nothing(workdir, data_dir, fields, message):
    before = _fingerprint_of_files(workdir / "checkpoints")
    with pytest.raises(UserError, match=message) as error:
        train.train_and_evaluate(small(data_dir, **fields), str(workdir))
    _one_line(error)
    assert _fingerprint_of_files(workdir / "checkpoints") == before
    assert not os.path.exists(f"{workdir}/checkpoints.skipped")


def test_resume_with_bookkeeping_changes_keeps_the_run(workdir, data_dir, trained):
    # What may change: logging, evaluation and checkpoint frequency, keep_checkpoints.
    results = train.train_and_evaluate(
        small(data_dir, log_every_steps=1, eval_every_steps=1, checkpoint_every_steps=1,
              keep_checkpoints=5), str(workdir))
    assert results["step"] == 4
    assert results["params_fingerprint"] == trained[1]["params_fingerprint"]
    assert not os.path.exists(f"{workdir}/checkpoints.skipped")


# --------------------------------------------------------------------------------------------
# A renamed step directory, another device count.

def test_a_renamed_step_directory_is_refused(workdir, data_dir, capsys):
    os.rename(workdir / "checkpoints" / "4", workdir / "checkpoints" / "7")
    _refused(lambda: train.train_and_evaluate(small(data_dir, num_train_steps=8), str(workdir)),
             capsys, r"checkpoints/7 holds the state of step 4: the step directory was renamed; "
                     r"rename it back to 4")
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "7"]


def test_resuming_on_another_device_count_says_so(workdir, data_dir, caplog):
    _edit_records(workdir, lambda record: record.update(num_devices=8, num_processes=2))
    results = train.train_and_evaluate(small(data_dir, num_train_steps=6), str(workdir))
    assert results["step"] == 6
    lines = [r.getMessage() for r in caplog.records if "bit-identical" in r.getMessage()]
    assert lines == ["Resuming a checkpoint written on 8 device(s) in 2 process(es) on 1 "
                     "device(s) in 1 process(es): training continues correctly, but the data "
                     "order and the numerics change, so the result will not be bit-identical to "
                     "an uninterrupted run"]


def test_resuming_on_the_same_device_count_says_nothing(workdir, data_dir, caplog):
    train.train_and_evaluate(small(data_dir, num_train_steps=6), str(workdir))
    assert not [r for r in caplog.records if "bit-identical" in r.getMessage()]

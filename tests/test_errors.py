"""The two phrasings every one-line message uses (sharesnet_jax/errors.py)."""

import pytest

from sharesnet_jax.errors import UserError, check_one_of, first_line, not_one_of


def test_first_line_quotes_the_first_line_only_and_never_fails_on_an_empty_message():
    assert first_line(OSError("disk full\n  at write()\n")) == "disk full"
    assert first_line(RuntimeError("\n\n  padded first line  \nsecond")) == "padded first line"
    assert first_line(ValueError("")) == "ValueError"  # splitlines()[0] raised IndexError here
    assert first_line(KeyError()) == "KeyError"
    assert first_line(ValueError("x" * 500)) == "x" * 200
    assert first_line(ValueError("abcdef"), limit=3) == "abc"


def test_first_line_reads_a_tensorflow_style_message_attribute():
    class TfError(Exception):
        message = "DataLoss: corrupted record at 12\nmore"

    assert first_line(TfError("ignored")) == "DataLoss: corrupted record at 12"


def test_not_one_of_names_the_value_and_every_choice():
    assert not_one_of("share", "some", ("none", "paper", "all")) == (
        "share='some' is not one of 'none', 'paper', 'all'")


def test_check_one_of_returns_the_value_or_raises_the_requested_type():
    assert check_one_of("stage_impl", "scan", ("loop", "scan")) == "scan"
    with pytest.raises(ValueError, match=r"^stage_impl='Scan' is not one of 'loop', 'scan'$"):
        check_one_of("stage_impl", "Scan", ("loop", "scan"))
    with pytest.raises(UserError, match="--platforms='gpu'"):
        check_one_of("--platforms", "gpu", iter(("cpu", "tpu")), UserError)

"""Command line: `python -m sharesnet_jax.main --config=configs/X.py --workdir=DIR`.

Every config field can be overridden with `--config.FIELD=VALUE`. A thin layer over
`train.train_and_evaluate`; bad input ends in one line on stderr, not a traceback.
"""

from __future__ import annotations

import logging as std_logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # its notice bypasses the log level

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, results.")
flags.mark_flags_as_required(["config", "workdir"])


def _hide_accelerators_from_tensorflow() -> None:
    """JAX owns the accelerators; TF (input pipeline only) must not reserve their memory."""
    try:
        import tensorflow as tf

        tf.config.set_visible_devices([], "GPU")
        tf.config.set_visible_devices([], "TPU")
    except (ImportError, RuntimeError, ValueError):
        pass


def _quiet_library_info_logs() -> None:
    """Orbax logs every save at INFO in detail; keep its warnings and ours, drop its chatter."""

    def keep(record) -> bool:
        return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname

    logging.get_absl_handler().python_handler.addFilter(keep)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    _hide_accelerators_from_tensorflow()
    _quiet_library_info_logs()
    import jax

    from sharesnet_jax import train
    from sharesnet_jax.errors import UserError

    if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("SLURM_NTASKS", "1") != "1":
        jax.distributed.initialize()
    logging.info("Process %d of %d; local devices: %s", jax.process_index(), jax.process_count(),
                 jax.local_devices())
    try:
        config = _CONFIG.value
        config.keys()  # the file loads lazily: make it fail here if it is missing or broken
    except Exception as err:  # noqa: BLE001 - the config file is the user's code
        print(f"error: cannot load --config: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    try:
        train.train_and_evaluate(config, _WORKDIR.value)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with a bad flag or config override reported in one line, not a trace."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        message = str(err)
    except (AttributeError, KeyError) as err:  # config_dict's unknown-field errors
        text = str(err).strip("'\"").replace("\\n", " ").replace("\\'", "'")
        message = f"unknown config field: {text}"
    except (OSError, SyntaxError, ValueError, TypeError) as err:
        message = f"bad --config: {type(err).__name__}: {err}"
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)

"""What every command line of the package shares: bad input becomes one `error:` line on stderr
and exit status 2, never a traceback; library chatter stays out of the console."""

from __future__ import annotations

import functools
import logging as std_logging
import sys
import threading
from typing import Callable

from sharesnet_jax.errors import UserError


def fail(message: str, status: int = 2) -> int:
    # The one line says what failed; background threads dying with the run (Orbax's writers
    # after a failed write) would only add traces after it.
    threading.excepthook = lambda args: None
    sys.unraisablehook = lambda args: None
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    return status


def one_line_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Turns a `UserError` raised anywhere below `main` into one line and its exit status (2,
    or the error's own `exit_code`, e.g. the planner's 1 for a config that does not fit)."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except UserError as err:
            return fail(str(err), getattr(err, "exit_code", 2))

    return wrapped


def load_config(config_flag):
    """The value of an ml_collections config-file flag; the file loads lazily, so a missing or
    broken file (the user's code) is reported here, in one line."""
    try:
        config = config_flag.value
        config.keys()
    except Exception as err:  # noqa: BLE001 - the config file is the user's code
        raise UserError(f"cannot load --config: {type(err).__name__}: {err}") from None
    return config


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with a bad flag or config override reported in one line, not a trace."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        message = _without_traceback(str(err))
    except (AttributeError, KeyError) as err:  # config_dict's unknown-field errors
        text = str(err).strip("'\"").replace("\\n", " ").replace("\\'", "'")
        message = f"unknown config field: {text}"
    except Exception as err:  # noqa: BLE001 - a config file that fails to import or build
        message = f"bad --config: {type(err).__name__}: {err}"
    sys.exit(fail(message))


def _without_traceback(message: str) -> str:
    """absl wraps an exception of the config file's `get_config(ARG)` (a `--config=FILE:ARG`
    the config does not take) with its whole trace: keep what failed and the exception's line."""
    head, marker, trace = message.partition("Traceback (most recent call last):")
    if not marker:
        return message
    lines = [line for line in trace.strip().splitlines() if line.strip()]
    return f"{head.strip()} {lines[-1].strip() if lines else ''}".strip()


def quiet_library_logs() -> None:
    """Orbax logs every save at INFO in detail and TFDS every dataset it opens: keep warnings and
    our own lines in the console, drop their chatter (and the traces of Orbax's errors)."""
    from absl import logging

    def keep(record) -> bool:
        chatty = "/orbax/" in record.pathname or "/tensorflow_datasets/" in record.pathname
        if chatty and record.exc_info:
            # Orbax logs the failures of its writer threads with their traces; the trainer
            # reports the same failure in one line, so keep Orbax's line and drop the trace.
            record.exc_info, record.exc_text = None, None
        return record.levelno >= std_logging.WARNING or not chatty

    logging.get_absl_handler().python_handler.addFilter(keep)

    def one_line(exc_type, exc_value, where: str) -> None:
        print(f"warning: {where}: {exc_type.__name__}: {exc_value}", file=sys.stderr, flush=True)

    # A background thread's failure, and an exception a library's native callback prints from
    # its own thread (tensorstore's, when a disk fills), as one warning line without the trace.
    threading.excepthook = lambda args: one_line(
        args.exc_type, args.exc_value, f"background thread {getattr(args.thread, 'name', '?')}")
    sys.unraisablehook = lambda args: one_line(args.exc_type, args.exc_value, "ignored")
    main_thread_hook = sys.excepthook

    def excepthook(exc_type, exc_value, trace) -> None:
        if threading.current_thread() is threading.main_thread():
            main_thread_hook(exc_type, exc_value, trace)  # a bug in the run itself: its trace
        else:
            one_line(exc_type, exc_value, f"thread {threading.current_thread().name}")

    sys.excepthook = excepthook

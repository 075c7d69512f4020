"""The small finished run and its private copies, shared by this folder's test files."""

from tests.small_run import trained, workdir  # noqa: F401 - fixtures, used by name

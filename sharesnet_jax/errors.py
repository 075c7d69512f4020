"""The error type for bad user input: `main` prints its one-line message instead of a traceback."""


class UserError(ValueError):
    """Bad input (config, dataset, workdir, checkpoint) that the user must fix; never a bug."""

"""Exception types the CLI turns into a one-line message and a non-zero exit.

Kept tiny on purpose: a `DmaxError` means "the user gave us something wrong" (bad config, missing
or corrupt file), as opposed to a bug, which should keep its traceback.
"""


class DmaxError(Exception):
    """A problem with the user's input or files, described in words."""


class ConfigError(DmaxError):
    """An unknown key, a bad value or a missing preset in the configuration."""


class DataError(DmaxError):
    """A missing, malformed or corrupt data file (trajectories, problems, checkpoints)."""


class DecodingError(DmaxError):
    """A decode that cannot finish as configured (a policy that never completes a block)."""


class ServerError(DmaxError):
    """A server a command needs (MLflow, Prefect) does not answer or refuses its credentials: checked
    before any work starts (`dmax_core.preflight`), so the user reads one line instead of a retry loop."""

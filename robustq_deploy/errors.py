"""User-facing errors.

Every error a user can cause (bad config, missing data, corrupt artifact, unsupported op,
wrong input shape) is raised as a subclass of :class:`RobustqError`. The CLI prints its message
on one line and exits with code 2; library callers can catch the base class.
"""


class RobustqError(Exception):
    """Base class of errors caused by user input; the message is one line naming the problem."""

    exit_code = 2


class ConfigError(RobustqError):
    """A configuration file or option is malformed, has an unknown key or an invalid value."""


class DataError(RobustqError):
    """A dataset is missing, corrupt, or fails its checksum."""


class ArtifactError(RobustqError):
    """An artifact is missing, corrupt, or its hash no longer matches the manifest."""


class UnsupportedError(RobustqError):
    """A model uses operators, modules or bit widths that a stage does not support."""


class InputError(RobustqError):
    """Input data has the wrong shape, dtype or range."""

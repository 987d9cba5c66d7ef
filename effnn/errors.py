"""User-facing errors: bad input that the CLIs report as one line, with a non-zero exit and no traceback."""


class EffnnError(Exception):
    """Base class for errors caused by user input (paths, configs, archs, files); the message names the fix."""


class DatasetNotFoundError(EffnnError, FileNotFoundError):
    """A dataset root is missing or does not have the expected layout."""


class ConfigError(EffnnError, ValueError):
    """A config value, recipe or override that effnn cannot use."""


class CheckpointError(EffnnError, ValueError):
    """A checkpoint that is corrupt, truncated or from an incompatible model."""

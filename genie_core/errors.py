"""User-facing errors: anything raised as a GenieError is an expected problem with the input
(bad file, bad config, wrong checkpoint) and the CLI reports it in one line with exit code 2."""


class GenieError(Exception):
    """An expected, user-caused error. The message is one line and names the culprit."""


class ArgumentError(GenieError, ValueError):
    """A bad argument to a library function (wrong shape, dtype, range or name). It is a
    ValueError too, so Python callers can catch it the usual way."""


class ConfigError(ArgumentError):
    """Bad preset, YAML file, --set override or model description (a ValueError too)."""


class VideoError(GenieError):
    """A video or image that cannot be read (missing, not a video, truncated, empty)."""


class CheckpointError(GenieError):
    """A checkpoint that is missing, not safetensors, or holds the wrong kind of model."""


class OutputError(GenieError):
    """An output that must not or cannot be written: it is one of the inputs or a sidecar, its
    folder is read-only or a file, or the disk is full. Nothing is left half-written."""

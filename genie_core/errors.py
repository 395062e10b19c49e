"""User-facing errors: anything raised as a GenieError is an expected problem with the input
(bad file, bad config, wrong checkpoint) and the CLI reports it in one line with exit code 2."""


class GenieError(Exception):
    """An expected, user-caused error. The message is one line and names the culprit."""


class ConfigError(GenieError):
    """Bad preset, YAML file or --set override."""


class VideoError(GenieError):
    """A video or image that cannot be read (missing, not a video, truncated, empty)."""


class CheckpointError(GenieError):
    """A checkpoint that is missing, not safetensors, or holds the wrong kind of model."""

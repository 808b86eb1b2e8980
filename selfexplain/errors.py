"""User-facing errors: the CLI prints them as one line and exits non-zero."""


class SelfExplainError(Exception):
    """A problem the user can fix (bad path, bad config, unsupported model...)."""


class ModelLoadError(SelfExplainError):
    """A model could not be found, read or used."""


class DataError(SelfExplainError):
    """A dataset file is missing or malformed."""


class ConfigError(SelfExplainError):
    """A configuration value is invalid."""


class TrainingError(SelfExplainError):
    """Training diverged (NaN loss) or could not start."""

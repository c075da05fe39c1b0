"""Errors a user can cause and fix. Anything else is an internal bug and keeps its traceback."""


class UserError(Exception):
    """A mistake in the config, the data, the model choice or the text; its message says how to fix it."""


class ConfigError(UserError):
    """A config value is wrong; `path` is the dotted key (``train.learning_rate``)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class DataError(UserError):
    """The dataset cannot be read or does not fit the config."""


class ModelError(UserError):
    """The model or tokenizer cannot be loaded or does not fit the task."""


class PredictError(UserError):
    """The text or model given to a prediction cannot be used."""

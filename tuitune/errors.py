"""User-facing errors: one line that says what is wrong and what to do."""


class TuituneError(Exception):
    """An error the user can act on; the CLI prints it without a traceback."""


class CatalogError(TuituneError):
    """models.toml (shipped or user) is malformed."""


class ModelFileError(TuituneError):
    """A GGUF file is missing, truncated or not a GGUF at all."""


class ModelNotFoundError(TuituneError):
    """A model reference is neither a catalog id nor a .gguf path."""


class ContextOverflowError(TuituneError):
    """The prompt does not fit in the model's context window."""


class SuiteError(TuituneError):
    """A prompt suite file is malformed."""


class DatasetError(TuituneError):
    """A training dataset file is malformed; the message names the file, the line and the fix."""

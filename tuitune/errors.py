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
    """The prompt does not fit in the model's context window.

    Carries the numbers so each front end can say how *it* raises the context: the CLI's ``--ctx``, the app's
    "context" field in the parameters panel.
    """

    def __init__(self, model_id: str, prompt_tokens: int, n_ctx: int, trained: int | None = None):
        self.model_id, self.prompt_tokens, self.n_ctx, self.trained = model_id, prompt_tokens, n_ctx, trained
        super().__init__(self.explain("raise --ctx"))

    def explain(self, how_to_raise: str) -> str:
        """The one-line message, with ``how_to_raise`` naming the setting where the context can grow."""
        room = self.trained is not None and self.trained > self.n_ctx
        return (
            f"the prompt is {self.prompt_tokens} tokens but {self.model_id}'s context holds {self.n_ctx}: "
            f"shorten it{f' or {how_to_raise} (up to {self.trained})' if room else ''}"
        )


class SuiteError(TuituneError):
    """A prompt suite file is malformed."""


class DatasetError(TuituneError):
    """A training dataset file is malformed; the message names the file, the line and the fix."""


class StoppedError(TuituneError):
    """The user stopped a model while it was loading (llama.cpp's load progress callback said no)."""

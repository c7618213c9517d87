"""tuitune: see what finetuning does to a language model, side by side, in the terminal."""

__version__ = "0.1.0"

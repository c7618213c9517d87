"""Headless command line: a thin layer over the same functions the TUI uses.

Imports stay light at module level (no llama_cpp, torch or transformers) so ``tuitune --help`` and
``tuitune models`` start instantly; heavy modules load inside the command that needs them. One module per
group of commands; ``entry`` holds ``main`` and the error funnel.
"""

from tuitune.cli.chat import print_result as _print_result
from tuitune.cli.common import Style
from tuitune.cli.entry import main

__all__ = ["Style", "_print_result", "main"]

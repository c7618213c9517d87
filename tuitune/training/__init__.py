"""LoRA finetuning on the torch path: datasets, training runs, and export to a llama.cpp adapter.

Nothing here is imported at start-up; torch, transformers and peft load inside the functions that use them.
"""

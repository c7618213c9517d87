"""Finetuning as a service: a training job on an OpenAI-compatible fine-tuning API, kept as a tuitune run.

``client`` speaks the API (files, jobs, events, checkpoints, cancel); ``rules`` checks the data against what
the service accepts and estimates the billed tokens; ``runs`` starts, follows, cancels and registers a job,
writing the same run directory a local run has, so the CLI and the Train screen show both alike.
"""

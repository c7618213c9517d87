"""The trainer's loss: cross-entropy over reply tokens, with the output head applied only where a label exists.

A plain loop rather than HF ``Trainer`` computes it this way because the full logits tensor is the largest
cost of a step for a big vocabulary (Gemma's 262k tokens). Only the trainer subprocess imports this module
(it imports torch).
"""

from __future__ import annotations

import torch

MIN_SHARED_PREFIX = 8  # below this, running the prefix on its own costs more than it saves


def length_chunks(batch: list, budget: int) -> list[list]:
    """A batch, sorted by length and cut into forward/backward passes of at most ``budget`` padded tokens.

    The gradient is the same as one pass over the whole batch (the loss is a sum over reply tokens, divided by
    the batch's total), but each pass pads only to its own longest sequence, and activations are held for one
    pass at a time: a batch of short examples runs as one pass (bigger matrix products, a shared prefix
    computed once for all of them), a batch of long ones in several, so memory stays bounded.
    """
    passes: list[list] = []
    for seq in sorted(batch, key=lambda seq: len(seq.input_ids)):
        current = passes[-1] if passes else None
        if current is not None and (len(current) + 1) * len(seq.input_ids) <= budget:
            current.append(seq)
        else:
            passes.append([seq])
    return passes


def shared_prefix_length(batch: list) -> int:
    """How many leading tokens every sequence of ``batch`` has in common, ending before any trained token.

    Chat templates that add a default system prompt (SmolLM2, Qwen2.5) start every example with the same
    dozens of tokens. The prefix stops one token before the first reply, so every trained token is predicted
    from a position after it.
    """
    first = batch[0].input_ids
    limit = min(seq.prompt_tokens for seq in batch) - 1
    length = 0
    while length < limit and all(seq.input_ids[length] == first[length] for seq in batch):
        length += 1
    return length


def reply_loss(causal_lm, batch: list, reduction: str = "mean", share_prefix: bool = True):
    """Cross-entropy over reply tokens only, with the output head applied only where a label exists.

    When the sequences share a prefix of at least ``MIN_SHARED_PREFIX`` tokens, it is run once and its keys
    and values are repeated for the batch, inside the autograd graph: the same loss and gradients (up to
    float rounding, and LoRA dropout drawn once for the shared positions), without computing the prefix
    once per sequence. ``share_prefix=False`` turns that off (gradient checkpointing runs without a cache).
    Tensors are built on the device of the model's embeddings.
    """
    device = causal_lm.get_input_embeddings().weight.device
    prefix = shared_prefix_length(batch) if len(batch) > 1 and share_prefix else 0
    window = getattr(causal_lm.config, "sliding_window", None)
    longest = max(len(seq.input_ids) for seq in batch)
    if prefix < MIN_SHARED_PREFIX or (window and longest > window):
        prefix = 0
    length = longest - prefix
    ids = torch.zeros((len(batch), length), dtype=torch.long)
    mask = torch.zeros((len(batch), prefix + length), dtype=torch.long)
    trained = torch.zeros((len(batch), length), dtype=torch.bool)
    for row, seq in enumerate(batch):
        ids[row, : len(seq.input_ids) - prefix] = torch.tensor(seq.input_ids[prefix:])
        mask[row, : len(seq.input_ids)] = 1
        trained[row, seq.prompt_tokens - prefix : len(seq.input_ids) - prefix] = True
    ids, mask, trained = ids.to(device), mask.to(device), trained.to(device)
    causal_lm.get_input_embeddings().sequence_length = prefix + length  # read by the NEFTune hook
    if prefix:
        from transformers import DynamicCache

        cache = DynamicCache(config=causal_lm.config)
        shared = torch.tensor([batch[0].input_ids[:prefix]], device=device)
        causal_lm.model(input_ids=shared, cache=cache, use_cache=True)
        cache.batch_repeat_interleave(len(batch))
        positions = torch.arange(prefix, prefix + length, device=device).expand(len(batch), -1)
        hidden = causal_lm.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                                 use_cache=True).last_hidden_state  # fmt: skip
    else:
        hidden = causal_lm.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    select = trained[:, 1:]  # position t predicts token t + 1
    logits = causal_lm.lm_head(hidden[:, :-1][select])
    softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return torch.nn.functional.cross_entropy(logits.float(), ids[:, 1:][select], reduction=reduction)


class ReplyLoss(torch.nn.Module):
    """``reply_loss`` as a module, so DistributedDataParallel can wrap it: DDP hooks the backward of whatever
    its wrapped module's forward computed, and our forward is not the model's own."""

    def __init__(self, causal_lm, share_prefix: bool = True):
        super().__init__()
        self.causal_lm = causal_lm
        self.share_prefix = share_prefix

    def forward(self, batch: list):
        return reply_loss(self.causal_lm, batch, reduction="sum", share_prefix=self.share_prefix)


def summed_eval_loss(causal_lm, sequences: list, batch_size: int, autocast) -> tuple[float, int]:
    """(sum of reply-token losses, reply tokens) over ``sequences``: ranks add theirs up before dividing."""
    causal_lm.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            batch = sequences[start : start + batch_size]
            with autocast():
                total += reply_loss(causal_lm, batch, reduction="sum").item()
            count += sum(seq.reply_tokens for seq in batch)
    return total, count

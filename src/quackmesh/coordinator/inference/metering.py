"""Token estimates and prices of inference requests, as pure integer functions.

The coordinator has no tokenizer (the node holds the model and enforces its context
exactly), so it brackets a prompt's token count instead:

* ``low`` — whitespace-separated words. Pre-tokenizers of BPE and SentencePiece models
  never merge across whitespace, so every word is at least one token: a prompt refused for
  ``low + max_tokens > context_len`` is over the limit on any such model.
* ``high`` — UTF-8 bytes plus a chat template's overhead per message. A byte-level
  tokenizer never makes more tokens than bytes; the template adds role markers (and some
  a default system prompt). What a node reports is billed up to ``high``, never beyond.
* ``estimate`` — ``max(low, bytes / 4)``: billed when a node reports no usage.

Prices (``ServedModel.price``) are micro-DUCK per 1,000 tokens, prompt and completion,
for ``generate`` models, and per input text for ``embed`` models. Costs round up, so a
request never costs 0 on a priced model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "MESSAGE_OVERHEAD",
    "TEMPLATE_OVERHEAD",
    "PromptSize",
    "fee_of",
    "generate_cost",
    "prompt_size",
]

MESSAGE_OVERHEAD = 16  # role markers and separators a chat template adds per message
TEMPLATE_OVERHEAD = 64  # the template's own start (some add a default system prompt)


@dataclass(frozen=True)
class PromptSize:
    """Bounds on a prompt's tokens (see the module docstring)."""

    low: int
    estimate: int
    high: int


def prompt_size(texts: Sequence[str], *, messages: int = 0) -> PromptSize:
    """Bounds for ``texts`` sent as one prompt (``messages``: chat messages, 0 for a plain
    prompt)."""
    low = sum(len(t.split()) for t in texts)
    size = sum(len(t.encode("utf-8")) for t in texts)
    overhead = MESSAGE_OVERHEAD * messages + (TEMPLATE_OVERHEAD if messages else 8)
    estimate = max(low, -(-size // 4))
    return PromptSize(low=low, estimate=estimate, high=size + overhead)


def generate_cost(price: int, tokens: int) -> int:
    """``price`` micro-DUCK per 1,000 tokens, for ``tokens`` tokens, rounded up."""
    if price < 0 or tokens < 0:
        raise ValueError("price and tokens must be non-negative")
    return -(-price * tokens // 1000)


def fee_of(amount: int, fee_bps: int) -> int:
    """The protocol fee on ``amount`` (as task settlement takes it: rounded down)."""
    return amount * fee_bps // 10_000

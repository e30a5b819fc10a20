"""A tiny causal language model made on the spot, with no download.

:func:`make_tiny_model` writes a Hugging Face model directory (``config.json``,
``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``) that
:class:`~quackmesh.inference.backends.TransformersBackend` serves like any other local model:
a GPT-2 architecture (Radford et al., 2019, "Language Models are Unsupervised Multitask
Learners") with 2 layers of 64 dimensions and a word-level tokenizer whose vocabulary is
the words of a fixed English text (:data:`TINY_TEXT`), built with the ``tokenizers``
library. Its weights are random (``torch.manual_seed(seed)``), so it writes grammatical
nonsense, but it writes the same nonsense every time:

* the same ``seed`` gives byte-identical files and the same greedy tokens;
* another ``seed`` gives another model — what a node that claims to serve one model but
  runs a different one looks like to verification.

Tests, the demo and the benchmarks use it; nothing here touches the network.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

__all__ = ["CHAT_TEMPLATE", "TINY_TEXT", "make_tiny_model", "tiny_vocab"]

Arch = Literal["gpt2", "llama"]

# The vocabulary source: every word and punctuation mark in it becomes one token.
TINY_TEXT = """
The duck swims across the quiet pond at dawn, and the water is cold and clear.
A mesh of small machines shares its idle compute, and every node earns a little DUCK
for honest work. Clients send jobs; providers run them; the coordinator checks the
results and pays the nodes that agree. Models answer questions, write short stories,
sort numbers and embed sentences into vectors. Hello, world! What is the answer? It is
forty two. Yes, no, maybe: one, two, three, four, five, six, seven, eight, nine, ten.
The green river runs past old stone bridges under a bright blue sky. Ducks like bread,
seeds, rain and warm sunny afternoons. Why do people train networks? To learn from data,
to predict the weather, to translate languages and to help each other. You are a helpful
assistant. I am a small model. Please tell me a story about a brave duck who flew home. The duck says hello.
system user assistant
"""

# The chat template written into the tokenizer when ``chat_template=True`` (Jinja, as
# Hugging Face tokenizers carry it): one "role says: content" line per message, then the
# cue. It differs from the backend's plain template on purpose, so tests can tell them apart.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }} says: {{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant says:{% endif %}"
)

_SPECIALS = ("<pad>", "<eos>", "<unk>")  # ids 0, 1, 2
_WORD_RE = re.compile(r"\w+|[^\w\s]")  # the split of tokenizers' Whitespace pre-tokenizer


def tiny_vocab() -> dict[str, int]:
    """The tokenizer's vocabulary: the special tokens, then :data:`TINY_TEXT`'s words sorted."""
    words = sorted(set(_WORD_RE.findall(TINY_TEXT)))
    return {tok: i for i, tok in enumerate([*_SPECIALS, *words])}


def make_tiny_model(
    path: Path | str,
    *,
    seed: int = 0,
    arch: Arch = "gpt2",
    layers: int = 2,
    dim: int = 64,
    context_len: int = 256,
    chat_template: bool = False,
) -> Path:
    """Write a tiny random causal LM and its tokenizer to ``path`` (created) and return it.

    ``arch`` picks GPT-2 (learned positions) or Llama (rotary positions, RMSNorm) blocks;
    ``context_len`` is the most tokens (prompt and completion) it takes. With
    ``chat_template`` the tokenizer carries :data:`CHAT_TEMPLATE`; without one, chat
    requests are rendered with the backend's plain template instead.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )
    from transformers.utils import logging as hf_logging

    quiet: Any = hf_logging.disable_progress_bar  # untyped; "Writing model shards" bars
    quiet()
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    pad_id, eos_id = vocab["<pad>"], vocab["<eos>"]

    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # no decoder: tokens join with " "
    fast: Any = PreTrainedTokenizerFast  # untyped constructor
    tokenizer = fast(
        tokenizer_object=backend,
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=context_len,
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)

    heads = max(1, dim // 16)
    # A wide initialisation makes the logits far apart, so greedy decoding has no near-ties
    # that could flip between machines, and its outputs vary more than with GPT-2's 0.02.
    init = 0.2
    torch.manual_seed(seed)
    model: Any
    if arch == "gpt2":
        gpt2 = GPT2Config(
            vocab_size=len(vocab),
            n_positions=context_len,
            n_embd=dim,
            n_layer=layers,
            n_head=heads,
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            pad_token_id=pad_id,
            initializer_range=init,
        )
        model = GPT2LMHeadModel(gpt2)
    elif arch == "llama":
        llama = LlamaConfig(
            vocab_size=len(vocab),
            hidden_size=dim,
            intermediate_size=dim * 2,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=context_len,
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            pad_token_id=pad_id,
            initializer_range=init,
            tie_word_embeddings=True,
        )
        model = LlamaForCausalLM(llama)
    else:
        raise ValueError(f"arch must be 'gpt2' or 'llama', got {arch!r}")
    model.eval()
    model.save_pretrained(out)  # safetensors
    return out

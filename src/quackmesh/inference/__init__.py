"""Layer 2: inference — the models a serving node answers inference requests with (issue 6).

Modules::

    base.py           the Backend ABC, request inputs, errors (the contract)
    backends.py       sentence-transformers and transformers backends, --serve specs
    openai_server.py  a backend forwarding to a local OpenAI-compatible server
    detokenize.py     streaming detokenization (text released as tokens come)
    worker.py         the serving child process: one backend, JSON lines on stdin/stdout
    tiny.py           a tiny random causal LM made on the spot (tests, demo, benchmarks)

This layer imports only ``quackmesh.core`` and the numeric / model libraries; torch,
transformers and sentence-transformers are imported when a backend is loaded, not here.
The node side (leasing work, streaming answers) is :mod:`quackmesh.node.serving`.
"""

from __future__ import annotations

from quackmesh.inference.backends import (
    Backend,
    BackendError,
    BadInput,
    Delta,
    EmbeddingBackend,
    Finish,
    Interrupted,
    ModelInfo,
    OpenAIServerBackend,
    ServeSpec,
    TransformersBackend,
    load_backend,
    parse_serve,
    parse_serves,
)
from quackmesh.inference.tiny import make_tiny_model

__all__ = [
    "Backend",
    "BackendError",
    "BadInput",
    "Delta",
    "EmbeddingBackend",
    "Finish",
    "Interrupted",
    "ModelInfo",
    "OpenAIServerBackend",
    "ServeSpec",
    "TransformersBackend",
    "load_backend",
    "make_tiny_model",
    "parse_serve",
    "parse_serves",
]

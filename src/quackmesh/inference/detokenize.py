"""Streaming detokenization: turning token ids into text as they are generated.

Decoding one token at a time is wrong for most tokenizers (a word piece's leading space,
a UTF-8 character split over byte tokens), so :class:`IncrementalDecoder` decodes a short
window of recent ids at each step and releases only the text that grew past what was
already released, holding back a trailing U+FFFD (an incomplete character). This is the
method of Hugging Face text-generation-inference (``Model.decode_token``, 2023).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["IncrementalDecoder"]


class IncrementalDecoder:
    """Streaming detokenization: text is released only once it is stable.

    Decoding one token at a time is wrong for most tokenizers (a word-piece's leading
    space, a UTF-8 character split over byte tokens), so each step decodes a short window
    of recent ids and releases what grew past the already-released prefix, holding back a
    trailing U+FFFD (an incomplete character). The released texts concatenate to the
    decode of all ids. This is the method of Hugging Face text-generation-inference
    (``Model.decode_token``).
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0  # start of the window that gives context to the next decode
        self._read = 0  # end of what has been released
        self._pending: list[int] = []  # ids whose text is not released yet (or empty)

    def push(self, token_id: int) -> str:
        """Add one token id; returns newly stable text ("" while it is held back)."""
        self._ids.append(token_id)
        self._pending.append(token_id)
        return self._release(final=False)

    def flush(self) -> str:
        """All text not released yet (call once, after the last token)."""
        return self._release(final=True)

    def take_ids(self) -> list[int]:
        """The ids pushed since the last call, in order."""
        ids, self._pending = self._pending, []
        return ids

    def _release(self, *, final: bool) -> str:
        if self._read >= len(self._ids):
            return ""
        before = self._decode(self._ids[self._prefix : self._read])
        now = self._decode(self._ids[self._prefix :])
        if len(now) <= len(before) or (now.endswith("\ufffd") and not final):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return now[len(before) :]

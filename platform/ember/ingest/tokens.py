"""Token counting and cutting with the embedder's own tokenizer.

Chunks are sized in the tokens the embedder sees, so none is silently
truncated at the model's maximum sequence length.

The model's `tokenizer.json` is read with the `tokenizers` library itself
(what transformers' fast tokenizers wrap): a read task then starts in a
fraction of a second instead of the ~5 s that importing transformers takes
here. Models without that file load through transformers.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path


class TokenCounter:
    """`encode(text)` gives (token count, [(start, end) character offsets])."""

    def __init__(self, encode) -> None:
        self._encode = encode

    def count(self, text: str) -> int:
        return len(self._encode(text)[0])

    def split(self, text: str, limit: int) -> list[str]:
        """Cut `text` into pieces of at most `limit` tokens, at token boundaries."""
        offsets = self._encode(text)[1]
        pieces = []
        for start in range(0, len(offsets), limit):
            window = offsets[start:start + limit]
            pieces.append(text[window[0][0]:window[-1][1]].strip())
        return [p for p in pieces if p]


@lru_cache(maxsize=4)
def load_counter(model_path: str) -> TokenCounter:
    file = Path(model_path) / "tokenizer.json"
    if file.is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(file))
        # The file may carry the model's truncation and padding: a count needs neither.
        tokenizer.no_truncation()
        tokenizer.no_padding()

        def encode(text: str):
            encoding = tokenizer.encode(text, add_special_tokens=False)
            return encoding.ids, encoding.offsets
        return TokenCounter(encode)
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(model_path)

    def encode_slow(text: str):
        out = auto(text, add_special_tokens=False, return_offsets_mapping=True)
        return out["input_ids"], out["offset_mapping"]
    return TokenCounter(encode_slow)

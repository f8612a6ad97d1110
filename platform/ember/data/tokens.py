"""Token counting and cutting with the embedder's own tokenizer.

Chunks are sized in the tokens the embedder sees, so none is silently
truncated at the model's maximum sequence length.
"""

from __future__ import annotations

from functools import lru_cache


class TokenCounter:
    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def split(self, text: str, limit: int) -> list[str]:
        """Cut `text` into pieces of at most `limit` tokens, at token boundaries."""
        offsets = self.tokenizer(text, add_special_tokens=False,
                                 return_offsets_mapping=True)["offset_mapping"]
        pieces = []
        for start in range(0, len(offsets), limit):
            window = offsets[start:start + limit]
            pieces.append(text[window[0][0]:window[-1][1]].strip())
        return [p for p in pieces if p]


@lru_cache(maxsize=4)
def load_counter(model_path: str) -> TokenCounter:
    from transformers import AutoTokenizer

    return TokenCounter(AutoTokenizer.from_pretrained(model_path))

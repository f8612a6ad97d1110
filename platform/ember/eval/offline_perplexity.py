"""Reference perplexity on Ray for LoRA adapters, which the service cannot score.

vLLM fails on prompt log-probabilities with an adapter (vllm-project/vllm#16668), so
`ember eval model` scores an adapter and its base here instead, both the same way:
one Ray task loads the base's files (float32, transformers) with the registered adapter
on top (PEFT) or without it, renders each chat with the model's template as the service
does (the prompt with the generation prompt, then with the reference as the final
assistant turn) and sums the reference tokens' negative log-likelihood.
"""

from __future__ import annotations

from ember.errors import EmberError


def reference_nll(model_dir: str, adapter_dir: str | None, chats: list[tuple[list[dict], str]]
                  ) -> list[tuple[float, int]]:
    """(summed NLL, token count) of each reference after its prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    scored = []
    with torch.no_grad():
        for prompt, reference in chats:
            start = len(_tokens(tokenizer, prompt, generation_prompt=True))
            ids = torch.tensor([_tokens(tokenizer, [*prompt, {"role": "assistant",
                                                              "content": reference}])])
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
            token_logprobs = logprobs.gather(1, ids[0, 1:, None])[:, 0]
            reference_part = token_logprobs[start - 1:]
            scored.append((-reference_part.sum().item(), reference_part.numel()))
    return scored


def _tokens(tokenizer, messages: list[dict], generation_prompt: bool = False) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False,
                                         add_generation_prompt=generation_prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def model_files(base: str, base_source: str | None) -> str:
    """The folder of the served base model's weights: `base_source`, else the catalogue's."""
    from ember.models.catalogue import ModelNotAvailableError, resolve_model

    try:
        return resolve_model(base_source or base)
    except ModelNotAvailableError as exc:
        raise EmberError(f"scoring the adapter's perplexity needs its base's files: {exc} "
                         f"Pass --base-source with the base model's folder.") from None


def score_on_ray(model_dir: str, adapter_dir: str | None,
                 chats: list[tuple[list[dict], str]]) -> list[tuple[float, int]]:
    import ray

    from ember.ray_session import connect_ray

    connect_ray(log_to_driver=False)  # the task's loading bars and warnings stay in Ray's logs
    task = ray.remote(num_cpus=1)(reference_nll)
    return ray.get(task.remote(model_dir, adapter_dir, chats))

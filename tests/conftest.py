"""Shared test settings."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(request):
    """One torch thread for the language-model tests: these models are small, and on a
    shared 2-core machine two threads contend with every other process (5x slower for the
    124M shape under load)."""
    if request.module.__name__.split(".")[-1] not in ("test_rlhf", "test_value_head",
                                                          "test_bf16_cpu", "test_faults"):
        yield
        return
    from ppo_core._runtime import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def tiny():
    """(model, tokenizer): the course's tiny GPT-2 on the CPU, one copy per test module."""
    from ppo_core.lm import models

    return models.load_policy("tiny", device="cpu")


@pytest.fixture(scope="module")
def prompts():
    """32 held-out review openers."""
    from ppo_core.lm import text

    return text.build_prompts(n=32, seed=1)


@pytest.fixture(scope="session")
def bf16_close_to_fp32():
    """`check(model, tok, prompts, seed, max_new_tokens, mean_tol, max_tol)` for a GPT-2
    `model`: on a copy whose final norm is scaled by 8, so that its logits reach ±100 as
    GPT-2's do (where bf16 steps are 0.5), sample under bf16 autocast, score the rollout
    with and without bf16, and assert that
    * log-probs, values and entropies come back float32 and finite;
    * bf16 changed something (autocast ran), within `mean_tol` / `max_tol` nats of fp32;
    * the sampling-time log-probs agree with the bf16 re-scoring (same float32 head).
    Returns (mean, max) of |logp_bf16 − logp_fp32|.

    Measured on the CPU (16 prompts × 12 tokens): 0.0025 mean, 0.071 worst as the trainer
    does it; 0.021 / 0.36 without the float32 head, 0.0044 / 0.19 with the logits or the
    log-softmax rounded to bf16; sampling vs re-scoring 0.028 worst (0.34 when generation
    lacks the float32 head). Used by test_bf16_cpu (tight bounds) and test_gpu."""
    import copy

    import torch

    from ppo_core.trainers.rlhf import CausalLMWithValueHead, sample_responses, sequence_logprobs
    from ppo_core.value_head import position_ids_from_mask

    def check(model, tok, prompts, seed=3, max_new_tokens=12, mean_tol=0.008, max_tol=0.15):
        big = copy.deepcopy(model)
        with torch.no_grad():
            big.transformer.ln_f.weight.mul_(8)
            big.transformer.ln_f.bias.mul_(8)
        policy = CausalLMWithValueHead(big)
        torch.manual_seed(seed)                       # the sample does not depend on the head's init
        ro = sample_responses(policy, tok, prompts, max_new_tokens=max_new_tokens, bf16=True,
                              return_sampling_logprobs=True)
        assert ro.sampling_logprobs.dtype == torch.float32
        m = ro.mask
        with torch.no_grad():
            full, half = (sequence_logprobs(policy, ro.input_ids, ro.attention_mask,
                                            ro.n_prompt, bf16=b, with_values=True,
                                            with_entropy=True) for b in (False, True))
            logits = big(input_ids=ro.input_ids, attention_mask=ro.attention_mask,
                         position_ids=position_ids_from_mask(ro.attention_mask)).logits
        assert float(logits.abs().max()) > 64                       # bf16 spacing ≥ 0.5
        for key in ("logp", "values", "entropy"):
            assert half[key].dtype == torch.float32, (key, half[key].dtype)
            assert bool(torch.isfinite(half[key]).all()), key
        diff = (half["logp"] - full["logp"])[m].abs()
        stats = float(diff.mean()), float(diff.max())
        assert stats[0] < mean_tol and stats[1] < max_tol, stats
        # relative to the same sample: logits rounded to bf16 before a float32 log-softmax
        # err ~6× more (measured on 8 samples: ratio 0.10–0.19); a bug that rounds them fails
        P = ro.n_prompt
        lg = logits[:, P - 1:-1].float().bfloat16().float()
        rounded = torch.log_softmax(lg, -1).gather(-1, ro.input_ids[:, P:, None]).squeeze(-1)
        rounded_err = float((rounded - full["logp"])[m].abs().mean())
        assert stats[0] < 0.4 * rounded_err, (stats[0], rounded_err)
        assert stats[1] > 1e-5, "bf16 autocast changed nothing: did it run?"
        assert float((half["values"] - full["values"])[m].abs().max()) < max_tol
        resample = (half["logp"] - ro.sampling_logprobs)[m].abs()
        assert float(resample.max()) < max_tol, float(resample.max())
        return stats

    return check

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
                                                          "test_bf16_cpu"):
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    """(model, tokenizer): the course's tiny GPT-2 on the CPU, one copy per test module."""
    from ppo_core import text

    return text.load_policy("tiny", device="cpu")


@pytest.fixture(scope="module")
def prompts():
    """32 held-out review openers."""
    from ppo_core import text

    return text.build_prompts(n=32, seed=1)


@pytest.fixture(scope="session")
def bf16_close_to_fp32():
    """`check(policy, tok, prompts, seed, max_new_tokens)`: sample under bf16 autocast, score
    the rollout with and without bf16, assert that log-probs, values and entropies come back
    float32 and finite, that bf16 changed something (autocast ran) but stayed within 0.05
    nats mean and 0.25 worst of fp32, and that sampling-time log-probs agree as well.
    Returns (mean, max) of |logp_bf16 − logp_fp32|. Used by test_bf16_cpu and test_gpu."""
    import torch

    from ppo_core.rlhf import sample_responses, sequence_logprobs

    mean_tol, max_tol = 0.05, 0.25

    def check(policy, tok, prompts, seed=3, max_new_tokens=12):
        torch.manual_seed(seed)
        ro = sample_responses(policy, tok, prompts, max_new_tokens=max_new_tokens, bf16=True,
                              return_sampling_logprobs=True)
        assert ro.sampling_logprobs.dtype == torch.float32
        m = ro.mask
        with torch.no_grad():
            full, half = (sequence_logprobs(policy, ro.input_ids, ro.attention_mask,
                                            ro.n_prompt, bf16=b, with_values=True,
                                            with_entropy=True) for b in (False, True))
        for key in ("logp", "values", "entropy"):
            assert half[key].dtype == torch.float32, (key, half[key].dtype)
            assert bool(torch.isfinite(half[key]).all()), key
        diff = (half["logp"] - full["logp"])[m].abs()
        stats = float(diff.mean()), float(diff.max())
        assert stats[0] < mean_tol and stats[1] < max_tol, stats
        assert stats[1] > 1e-5, "bf16 autocast changed nothing: did it run?"
        assert float((half["values"] - full["values"])[m].abs().max()) < max_tol
        resample = (half["logp"] - ro.sampling_logprobs)[m].abs()
        assert float(resample.mean()) < mean_tol, float(resample.mean())
        return stats

    return check

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

"""Masked statistics and token log-probabilities."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ppo_core.masking import logprobs_from_logits, masked_mean, masked_var, masked_whiten


def test_masked_mean_and_var_match_the_unmasked_subset():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = torch.tensor([[1, 1, 0], [0, 1, 1]])
    sub = x[m.bool()]
    assert masked_mean(x, m).item() == pytest.approx(sub.mean().item())
    assert masked_var(x, m).item() == pytest.approx(sub.var().item())
    assert masked_var(x, m, unbiased=False).item() == pytest.approx(sub.var(unbiased=False).item())
    assert masked_mean(x, m, axis=1).tolist() == pytest.approx([1.5, 5.5])


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 6), st.integers(2, 8), st.integers(0, 10_000))
def test_masked_functions_ignore_padded_values(b, t, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, generator=g)
    m = torch.rand(b, t, generator=g) > 0.4
    m[0, :2] = True                                   # at least two real entries
    padded = torch.where(m, x, torch.full_like(x, 1e9))
    assert masked_mean(padded, m).item() == pytest.approx(masked_mean(x, m).item(), abs=1e-6)
    assert masked_var(padded, m).item() == pytest.approx(masked_var(x, m).item(), abs=1e-5)
    w1, w2 = masked_whiten(padded, m), masked_whiten(x, m)
    assert torch.allclose(w1[m], w2[m], atol=1e-5)
    assert torch.equal(w1[~m], padded[~m])            # padded entries left untouched


def test_masked_whiten_stats():
    x = torch.randn(4, 10) * 3 + 2
    m = torch.ones(4, 10)
    m[:, 7:] = 0
    w = masked_whiten(x, m)
    assert masked_mean(w, m).item() == pytest.approx(0.0, abs=1e-5)
    assert masked_var(w, m).item() == pytest.approx(1.0, abs=1e-4)


def test_logprobs_from_logits_gathers_the_chosen_token():
    logits = torch.randn(2, 5, 7)
    tokens = torch.randint(0, 7, (2, 5))
    out = logprobs_from_logits(logits, tokens)
    assert out.shape == (2, 5)
    ref = torch.log_softmax(logits, -1)
    for b in range(2):
        for t in range(5):
            assert out[b, t].item() == pytest.approx(ref[b, t, tokens[b, t]].item(), abs=1e-6)


def test_logprobs_from_logits_rejects_bad_shapes_and_ids():
    with pytest.raises(ValueError, match="logits"):
        logprobs_from_logits(torch.randn(5, 7), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="tokens"):
        logprobs_from_logits(torch.randn(2, 5, 7), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="tokens"):
        logprobs_from_logits(torch.randn(1, 2, 7), torch.tensor([[0, 7]]))


def test_logprobs_with_entropy_match_the_separate_functions():
    from ppo_core.losses import entropy_from_logits

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=g) * 3
    tokens = torch.randint(0, 7, (3, 5), generator=g)
    logp, ent = logprobs_from_logits(logits, tokens, with_entropy=True)
    torch.testing.assert_close(logp, logprobs_from_logits(logits, tokens))
    torch.testing.assert_close(ent, entropy_from_logits(logits))

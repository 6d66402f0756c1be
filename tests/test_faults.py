"""ppo_core.course.faults: each planted bug is in force during its run, and only then."""

from __future__ import annotations

import pytest
import torch

from ppo_core.course import faults
from ppo_core.trainers import rlhf


def _config(**kw):
    return rlhf.RLHFConfig(steps=2, batch_size=4, minibatch_size=4, response_len=6, update_epochs=1,
                           lr=1e-3, device="cpu", progress=False, **kw)


def test_each_fault_runs_and_the_trainer_is_restored_afterwards():
    originals = (rlhf.response_mask, rlhf.sequence_logprobs, rlhf.sample_responses)
    for fault in (None,) + faults.FAULTS:
        res = faults.train_with_fault(fault, _config())
        assert len(res.records) == 2, fault
    assert (rlhf.response_mask, rlhf.sequence_logprobs, rlhf.sample_responses) == originals


def test_an_unfrozen_reference_reports_kl_exactly_zero():
    res = faults.train_with_fault("unfrozen_reference", _config(beta=0.1))
    assert [r["objective/kl"] for r in res.records] == [0.0, 0.0]
    assert res.ref_model is res.policy.pretrained_model


def test_the_shifted_scorer_scores_the_token_already_read():
    model, tok = rlhf.load_policy_and_tokenizer("tiny", "cpu")
    enc = tok(["The battery life is great"], return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    good = rlhf.sequence_logprobs(model, ids, mask, 1)["logp"]
    with faults.shifted_logprobs():
        bad = rlhf.sequence_logprobs(model, ids, mask, 1)["logp"]
    assert bad.shape == good.shape and not torch.allclose(bad, good)
    assert torch.equal(rlhf.sequence_logprobs(model, ids, mask, 1)["logp"], good)


def test_the_masked_eos_leaves_the_response_mask():
    ids = torch.tensor([[5, 0, 0], [0, 0, 0]])
    assert rlhf.response_mask(ids, 0).tolist() == [[True, True, False], [True, False, False]]
    with faults.eos_masked_out():
        assert rlhf.response_mask(ids, 0).tolist() == [[True, False, False], [True, False, False]]


def test_unknown_fault_is_refused():
    with pytest.raises(ValueError, match="fault"):
        faults.train_with_fault("typo", _config())

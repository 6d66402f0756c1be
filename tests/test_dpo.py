"""DPO (ppo_core.trainers.dpo): preference pairs from the simulated annotator, the pair
log-probabilities, a short real run on the tiny GPT-2, the command line."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ppo_core.lm import reward
from ppo_core.losses import dpo_loss
from ppo_core.trainers import dpo
from ppo_core.trainers.dpo import DPOConfig
from ppo_core.trainers.rlhf import sequence_logprobs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    from ppo_core._runtime import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def pairs(tiny, prompts):
    model, tok = tiny
    ann = reward.SimulatedAnnotator(temperature=0.1, seed=0)
    return dpo.preference_pairs(model, tok, prompts, 12, ann, response_len=8, seed=0)


def test_pairs_share_a_prompt_and_follow_the_annotator(pairs):
    assert len(pairs) == 12
    for p, c, r in zip(pairs.prompts, pairs.chosen, pairs.rejected):
        assert c.startswith(p) and r.startswith(p)
    # the annotator prefers higher gold: on pairs whose gold differs by > 0.3 it is right ≥ 95 %
    gc, gr = reward.gold_score(pairs.chosen), reward.gold_score(pairs.rejected)
    clear = (gc - gr).abs() > 0.3
    assert bool((gc[clear] > gr[clear]).all()), (gc, gr)


def test_pair_logprobs_equal_per_sequence_scoring(tiny, pairs):
    model, tok = tiny
    with torch.no_grad():
        lc, lr = dpo.pair_logprobs(model, pairs, [0, 3], tok.pad_token_id, torch.device("cpu"))
    for k, i in enumerate([0, 3]):
        for seq, ids in ((lc, pairs.chosen_ids[i]), (lr, pairs.rejected_ids[i])):
            full = torch.tensor([pairs.prompt_ids[i] + ids])
            with torch.no_grad():
                want = sequence_logprobs(model, full, torch.ones_like(full), len(pairs.prompt_ids[i]))
            assert float(seq[k]) == pytest.approx(float(want["logp"].sum()), abs=1e-4)


def test_first_step_loss_is_log_2(tiny, prompts, pairs):
    model, tok = tiny
    cfg = DPOConfig(steps=1, batch_size=4, n_pairs=12, progress=False, device="cpu", eval_size=4,
                    response_len=8)
    res = dpo.train(cfg, policy=copy.deepcopy(model), tokenizer=tok, prompts=prompts, pairs=pairs)
    r = res.records[0]
    assert r["losses/policy_loss"] == pytest.approx(0.6931, abs=1e-4)   # π = π_ref: σ(0) = ½
    assert r["objective/kl"] == 0.0 and r["rewards/margins"] == 0.0


def test_two_step_run_logs_the_rlhf_keys(tiny, prompts, pairs, tmp_path):
    model, tok = tiny
    cfg = DPOConfig(steps=3, batch_size=4, n_pairs=12, lr=1e-3, eval_every=2, eval_size=6,
                    response_len=8, progress=False, device="cpu",
                    log_path=str(tmp_path / "dpo.jsonl"), save_dir=str(tmp_path / "ckpt"))
    res = dpo.train(cfg, policy=copy.deepcopy(model), tokenizer=tok, prompts=prompts, pairs=pairs,
                    reward_fn=reward.gold_score)
    recs = res.records
    assert [r["iteration"] for r in recs] == [1, 2, 3]
    for key in ("objective/kl", "objective/gold_reward", "objective/proxy_reward",
                "losses/entropy", "losses/policy_loss", "losses/grad_norm", "objective/beta",
                "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "charts/response_length"):
        assert all(key in r for r in recs), key
    assert all(isinstance(recs[i]["objective/gold_reward"], float) for i in (0, 1, 2))
    assert recs[2]["objective/kl"] != 0.0                                  # the policy moved
    assert recs[1]["rewards/margins"] != 0.0
    lines = (tmp_path / "dpo.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [1, 2, 3]
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    assert (tmp_path / "ckpt" / dpo.CHECKPOINT_META).is_file()


def test_a_step_lowers_the_loss_on_its_batch(tiny, pairs):
    # one Adam step on a batch of pairs raises the margin the DPO loss rewards
    model, tok = tiny
    pol, ref = copy.deepcopy(model), copy.deepcopy(model)
    opt = torch.optim.Adam(pol.parameters(), lr=1e-3)
    idx, dev = list(range(8)), torch.device("cpu")
    with torch.no_grad():
        rc, rr = dpo.pair_logprobs(ref, pairs, idx, tok.pad_token_id, dev)
    losses = []
    for _ in range(2):
        lc, lr = dpo.pair_logprobs(pol, pairs, idx, tok.pad_token_id, dev)
        loss, _ = dpo_loss(lc, lr, rc, rr, beta=0.1)
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[1] < losses[0]


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="beta"):
        DPOConfig(beta=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        DPOConfig(n_pairs=4, batch_size=8)
    with pytest.raises(ValueError, match="reward_bias"):
        DPOConfig(reward_bias="emoji")


def test_cli_help_and_usage_error():
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-m", "ppo_core", "dpo", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0
    for flag in ("--model", "--steps", "--seed", "--log", "--beta", "--n-pairs", "--eval-every"):
        assert flag in out.stdout
    bad = subprocess.run([sys.executable, "-m", "ppo_core", "dpo", "--beta", "0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 2 and "beta" in bad.stderr and "Traceback" not in bad.stderr


def test_evaluating_does_not_change_the_training_run(tiny, prompts, pairs):
    model, tok = tiny
    weights = []
    for every in (0, 1):
        cfg = DPOConfig(steps=3, batch_size=4, n_pairs=12, lr=1e-3, eval_every=every, eval_size=4,
                        response_len=8, progress=False, device="cpu")
        res = dpo.train(cfg, policy=copy.deepcopy(model), tokenizer=tok, prompts=prompts,
                        pairs=pairs)
        weights.append(torch.cat([p.detach().flatten() for p in res.policy.parameters()]))
        losses = [r["losses/policy_loss"] for r in res.records]
        if every == 0:
            first = losses
            assert all(r["objective/gold_reward"] is None for r in res.records)
    assert losses == first and torch.equal(weights[0], weights[1])

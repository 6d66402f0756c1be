"""Token-level PPO (ppo_core.trainers.rlhf): alignment, padding, masks, rewards, and short real runs.

Everything runs offline (HF_HUB_OFFLINE=1) on the course's tiny GPT-2; the last tests run
three RLHF iterations of it and two iterations of the 124M GPT-2 shape at batch 4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ppo_core.trainers import rlhf
from ppo_core.advantages import gae
from ppo_core.lm.reward import gold_score
from ppo_core.trainers.rlhf import (RLHFConfig, response_mask, sample_responses,
                           sequence_logprobs, token_rewards)

ROOT = Path(__file__).resolve().parent.parent


# ---- masks and rewards: hand-computed tables ---------------------------------------------------

def test_response_mask_keeps_the_first_eos_only():
    eos = 0
    ids = torch.tensor([[5, 6, 0, 0, 0],      # EOS at t=2: kept, the padding after it is not
                        [5, 6, 7, 8, 9],      # no EOS: all kept (truncated at T)
                        [0, 0, 0, 0, 0],      # EOS first: one token
                        [5, 0, 7, 0, 9]])     # tokens after the first EOS never count
    expected = torch.tensor([[1, 1, 1, 0, 0],
                             [1, 1, 1, 1, 1],
                             [1, 0, 0, 0, 0],
                             [1, 1, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(response_mask(ids, eos), expected)
    with pytest.raises(ValueError, match="response_ids"):
        response_mask(torch.zeros(3, dtype=torch.long), eos)


def test_token_rewards_table():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    logp = torch.tensor([[-1.0, -2.0, -0.5, -9.0], [-1.0, -1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5, -0.1], [-1.0, -2.0, -1.0, -0.5]])
    scores = torch.tensor([2.0, -1.0])
    r, kl, dones = token_rewards(scores, logp, ref, mask, beta=0.1)
    # k1 = logp − ref; r = −β·k1, plus the score on the last response token; 0 off the mask
    assert torch.allclose(kl, torch.tensor([[0.5, -1.0, 0.0, 0.0], [0.0, 1.0, 0.0, -0.5]]))
    assert torch.allclose(r, torch.tensor([[-0.05, 0.1, 2.0, 0.0], [0.0, -0.1, 0.0, -1.0 + 0.05]]))
    assert torch.equal(dones, torch.tensor([[0., 0., 1., 0.], [0., 0., 0., 1.]]))
    # GAE with γ = 1, λ = 0.95 and zero values: advantages are λ-discounted reward sums that
    # stop at the episode's last token and are zero after it
    adv, _ = gae(r.T, torch.zeros(4, 2), dones.T, torch.zeros(2), gamma=1.0, lam=0.95)
    adv = adv.T
    assert adv[0, 3] == 0.0
    assert torch.isclose(adv[0, 2], torch.tensor(2.0))
    assert torch.isclose(adv[0, 0], torch.tensor(-0.05 + 0.95 * (0.1 + 0.95 * 2.0)))


# ---- the tiny GPT-2: alignment, padding, KL at the start ---------------------------------------

def test_left_padding_invariance_of_logprobs(tiny):
    model, tok = tiny
    texts = ["The battery life is great", "I bought this blender for my mom and it broke",
             "Terrible product, avoid"]
    enc_batch = tok(texts, return_tensors="pt", padding=True)
    assert tok.padding_side == "left" and (enc_batch["attention_mask"] == 0).any()
    with torch.no_grad():
        batch = sequence_logprobs(model, enc_batch["input_ids"], enc_batch["attention_mask"], 1)["logp"]
        worst = 0.0
        for i, t in enumerate(texts):
            enc = tok(t, return_tensors="pt")
            alone = sequence_logprobs(model, enc["input_ids"], enc["attention_mask"], 1)["logp"][0]
            n = alone.shape[0]
            worst = max(worst, float((batch[i, -n:] - alone).abs().max()))
    assert worst < 1e-5, worst


def test_recomputed_logprobs_equal_sampling_logprobs(tiny, prompts):
    model, tok = tiny
    torch.manual_seed(1)
    ro = sample_responses(model, tok, prompts[:8], max_new_tokens=12, return_sampling_logprobs=True)
    assert ro.attention_mask[:, :ro.n_prompt].eq(0).any()                  # prompts were padded
    with torch.no_grad():
        lp = sequence_logprobs(model, ro.input_ids, ro.attention_mask, ro.n_prompt)["logp"]
    diff = (lp - ro.sampling_logprobs)[ro.mask].abs().max()
    assert float(diff) < 1e-4, float(diff)
    # the mask keeps each response up to and including its first EOS, nothing after it
    eos = tok.eos_token_id
    resp = ro.input_ids[:, ro.n_prompt:]
    for row, m in zip(resp, ro.mask):
        hits = (row == eos).nonzero().flatten().tolist()
        if hits and m[hits[0]]:
            assert m[:hits[0] + 1].all() and not m[hits[0] + 1:].any()
    assert torch.equal(ro.mask, response_mask(torch.where(ro.mask, resp, torch.full_like(resp, eos)), eos))


def test_kl_is_exactly_zero_before_the_first_update(tiny, prompts):
    model, tok = tiny
    policy = rlhf.CausalLMWithValueHead(model)
    ref = rlhf._reference_copy(model)
    torch.manual_seed(2)
    ro = sample_responses(policy, tok, prompts[:8], max_new_tokens=10)
    rlhf.score_rollout(ro, policy, ref, gold_score, None)
    assert torch.equal(ro.logprobs, ro.ref_logprobs)
    _, kl, _ = token_rewards(ro.scores, ro.logprobs, ro.ref_logprobs, ro.mask, beta=0.2)
    assert float(kl.abs().max()) == 0.0


def test_per_token_kl_has_one_entry_per_response_token(tiny):
    model, tok = tiny
    tokens, kl = rlhf.per_token_kl(model, model, tok, "The battery life", " is great.")
    assert len(tokens) == kl.shape[0] >= 2 and float(kl.abs().max()) == 0.0


def test_per_token_kl_on_sampled_ids_keeps_the_eos_and_matches_the_rollout(tiny, prompts):
    """Given the sampled ids, the heatmap covers every action, the final EOS included, and
    equals log π_old − log π_ref of the rollout (a decoded string would lose the EOS)."""
    import copy

    model, tok = tiny
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.transformer.ln_f.weight.mul_(1.1)                       # a different policy
    torch.manual_seed(4)
    ro = sample_responses(other, tok, prompts[:8], max_new_tokens=16)
    ended = [b for b in range(8) if tok.eos_token_id in ro.response_ids[b][ro.mask[b]].tolist()]
    assert ended, "no response ended with EOS"
    b = ended[0]
    ids = ro.response_ids[b][ro.mask[b]]
    tokens, kl = rlhf.per_token_kl(other, model, tok, ro.prompts[b], ids)
    assert len(tokens) == int(ro.mask[b].sum()) and tokens[-1] == tok.eos_token
    with torch.no_grad():
        a = sequence_logprobs(other, ro.input_ids, ro.attention_mask, ro.n_prompt)["logp"][b]
        r = sequence_logprobs(model, ro.input_ids, ro.attention_mask, ro.n_prompt)["logp"][b]
    torch.testing.assert_close(kl, (a - r)[ro.mask[b]], atol=1e-4, rtol=0)
    text_tokens, _ = rlhf.per_token_kl(other, model, tok, ro.prompts[b], ro.responses[b])
    assert tok.eos_token not in text_tokens                              # the EOS is gone


# ---- real runs -------------------------------------------------------------------------------

def test_three_iteration_run_logs_and_checkpoints(tiny, prompts, tmp_path):
    model, tok = tiny
    import copy

    policy = copy.deepcopy(model)
    cfg = RLHFConfig(steps=3, batch_size=8, minibatch_size=4, response_len=10, update_epochs=2,
                     beta=0.05, lr=1e-4, log_path=str(tmp_path / "log.jsonl"),
                     save_dir=str(tmp_path / "ckpt"), progress=False, device="cpu")
    res = rlhf.train(cfg, policy=policy, tokenizer=tok, reward_fn=gold_score, gold_fn=gold_score,
                     prompts=prompts)
    assert len(res.records) == 3 and not res.interrupted
    first = res.records[0]
    assert first["objective/kl"] == 0.0                      # π = π_ref before any update
    for key in ("objective/kl", "objective/beta", "objective/proxy_reward",
                "objective/gold_reward", "losses/entropy", "losses/clipfrac", "losses/approx_kl",
                "losses/policy_loss", "losses/value_loss", "perf/episodes_per_second",
                "perf/tokens_per_second", "perf/generate_s", "perf/update_s"):
        assert all(isinstance(r[key], float) for r in res.records), key
    assert res.records[-1]["objective/kl"] != 0.0            # the policy moved
    assert len(first["samples"]) == 3 and isinstance(first["samples"][0]["response"], str)
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [1, 2, 3]
    ckpt = tmp_path / "ckpt"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "value_head.safetensors").is_file()
    loaded = rlhf.CausalLMWithValueHead.from_pretrained(ckpt)
    ids = tok(["The price"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a, va = res.policy(ids)
        b, vb = loaded(ids)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(va, vb)
    # --model PATH resumes from the checkpoint, value head included (marked with bias 5)
    from safetensors.torch import load_file, save_file

    head = load_file(str(ckpt / "value_head.safetensors"))
    save_file({**head, "summary.bias": torch.tensor([5.0])}, str(ckpt / "value_head.safetensors"))
    again = rlhf.train(RLHFConfig(model=str(ckpt), steps=1, batch_size=4, minibatch_size=4,
                                  response_len=4, update_epochs=1, progress=False, device="cpu"),
                       reward_fn=gold_score, gold_fn=gold_score, prompts=prompts)
    assert torch.equal(again.ref_model.transformer.wte.weight, res.policy.pretrained_model.transformer.wte.weight)
    assert abs(float(again.policy.v_head.summary.bias.detach()) - 5.0) < 0.1


def test_keyboard_interrupt_keeps_log_and_checkpoint(tiny, prompts, tmp_path):
    model, tok = tiny
    import copy

    def stop_after_two(record):
        if record["iteration"] == 2:
            raise KeyboardInterrupt

    cfg = RLHFConfig(steps=5, batch_size=4, minibatch_size=4, response_len=6, update_epochs=1,
                     log_path=str(tmp_path / "log.jsonl"), save_dir=str(tmp_path / "ckpt"),
                     progress=False, device="cpu")
    res = rlhf.train(cfg, policy=copy.deepcopy(model), tokenizer=tok, reward_fn=gold_score,
                     gold_fn=gold_score, prompts=prompts, callback=stop_after_two)
    assert res.interrupted and len(res.records) == 2
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2
    meta = json.loads((tmp_path / "ckpt" / "rlhf_config.json").read_text())
    assert meta["state"]["iteration"] == 2 and meta["state"]["interrupted"] is True


def test_non_finite_reward_names_the_iteration(tiny, prompts):
    model, tok = tiny
    import copy

    calls = {"n": 0}

    def flaky(texts):
        calls["n"] += 1
        scores = torch.zeros(len(texts))
        if calls["n"] == 2:
            scores[0] = float("nan")
        return scores

    cfg = RLHFConfig(steps=3, batch_size=4, minibatch_size=4, response_len=4, update_epochs=1,
                     progress=False, device="cpu")
    with pytest.raises(FloatingPointError, match="iteration 2"):
        rlhf.train(cfg, policy=copy.deepcopy(model), tokenizer=tok, reward_fn=flaky,
                   gold_fn=gold_score, prompts=prompts)


def test_gpt2_small_shape_two_iterations_at_batch_4(prompts, monkeypatch):
    """The `--model gpt2` path offline: GPT-2 small's architecture pre-trained on the corpus
    (here only a few steps) and loaded with `from_pretrained`."""
    from ppo_core.lm import models

    small = models.gpt2_small_spec
    monkeypatch.setattr(models, "gpt2_small_spec",     # not the 25-minute CPU build
                        lambda: small(steps=4, batch_size=4))
    torch.manual_seed(0)
    lm, tok = rlhf.load_policy_and_tokenizer("gpt2", device="cpu")
    assert lm.config.n_layer == 12 and lm.config.n_embd == 768 and lm.config.n_head == 12
    cfg = RLHFConfig(model="gpt2", steps=2, batch_size=4, minibatch_size=4, response_len=6,
                     update_epochs=1, progress=False, device="cpu")
    res = rlhf.train(cfg, policy=lm, tokenizer=tok, reward_fn=gold_score, gold_fn=gold_score,
                     prompts=prompts)
    assert len(res.records) == 2
    assert res.records[0]["objective/kl"] == 0.0
    assert all(torch.isfinite(torch.tensor(r["losses/policy_loss"])) for r in res.records)


# ---- configuration and command line -------------------------------------------------------------

def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="minibatch_size"):
        RLHFConfig(batch_size=8, minibatch_size=3)
    with pytest.raises(ValueError, match="beta"):
        RLHFConfig(beta=-1.0)
    with pytest.raises(ValueError, match="clip_eps"):
        RLHFConfig(clip_eps=0.0)
    with pytest.raises(ValueError, match="reward_bias"):
        RLHFConfig(reward_bias="emoji")


def test_cli_help_documents_every_flag():
    parser = rlhf.cli_parser()
    for action in parser._actions:
        assert action.help and len(action.help) > 5, action.option_strings
    for flag in ("--model", "--beta", "--clip-eps", "--steps", "--log", "--save"):
        assert flag in parser.format_help()
    out = subprocess.run([sys.executable, "-m", "ppo_core", "rlhf", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert out.returncode == 0 and "--clip-eps" in out.stdout and "--target-kl" in out.stdout
    from ppo_core.trainers.config import config_from_args

    cfg = config_from_args(rlhf.RLHFConfig, parser.parse_args(
        ["--beta", "0.2", "--clip-eps", "0.1", "--steps", "3", "--reward-bias", "exclamation"]))
    assert (cfg.beta, cfg.clip_eps, cfg.steps, cfg.reward_bias) == (0.2, 0.1, 3, "exclamation")


def test_rlhf_lab_runs_headless(tiny):
    import matplotlib

    matplotlib.use("Agg")
    from ppo_core.course.widgets import rlhf_lab

    lab = rlhf_lab(steps=2, batch_size=4, response_len=6, update_epochs=1, reward_fn=gold_score)
    lab.beta.value, lab.clip_eps.value = 0.3, 0.1
    records = lab.run()
    assert records is lab.last_records and len(records) == 2
    assert records[0]["objective/beta"] == 0.3
    lab.run(beta=0.0, clip_eps=0.5)
    assert lab.beta.value == 0.0 and len(lab.runs) == 2
    lines = lab.figure.axes[1].get_lines()                   # gold reward panel: one per run
    assert len(lines) == 2 and len(lines[0].get_xdata()) == 2
    assert "clipped" in lab.figure.axes[4].get_title()
    assert len(lab.figure.axes[4].get_lines()) == 2
    lab.iterations.value, lab.lr = 3, 1e-3                    # the run-length and lr controls
    assert lab.steps == 3 and lab.learning_rate.value == 1e-3
    assert len(lab.run()) == 3 and "3 it, lr 0.001" in list(lab.runs)[-1]
    with pytest.raises(ValueError, match="lr"):
        lab.lr = 0.5
    with pytest.raises(ValueError, match="steps"):
        lab.steps = 0
    assert "gold" in lab.status.value and "proxy" in lab.samples.value
    lab.clear()
    assert lab.runs == {} and not lab.figure.axes[0].get_lines()


def test_adaptive_beta_moves_towards_the_target(tiny, prompts):
    model, tok = tiny
    import copy

    cfg = RLHFConfig(steps=3, batch_size=4, minibatch_size=4, response_len=6, update_epochs=2,
                     lr=1e-3, beta=0.1, kl_target=1e-3, kl_horizon=20, progress=False,
                     device="cpu")
    res = rlhf.train(cfg, policy=copy.deepcopy(model), tokenizer=tok, reward_fn=gold_score,
                     gold_fn=gold_score, prompts=prompts)
    betas = [r["objective/beta"] for r in res.records]
    # iteration 1 has KL 0 < target: β falls by 20 % × 4/20; later KL > target: β rises
    assert betas[0] == 0.1 and abs(betas[1] - 0.1 * (1 - 0.2 * 4 / 20)) < 1e-12
    # every later step follows the clipped proportional rule from the KL that was logged
    for rec, nxt in zip(res.records[1:], betas[2:]):
        err = min(max(rec["objective/kl"] / 1e-3 - 1, -0.2), 0.2)
        assert abs(nxt - rec["objective/beta"] * (1 + err * 4 / 20)) < 1e-9


def test_reference_passed_in_is_left_usable_and_a_frozen_policy_is_refused(tiny, prompts):
    import copy

    model, tok = tiny
    ref = copy.deepcopy(model)
    cfg = RLHFConfig(steps=1, batch_size=4, minibatch_size=4, response_len=4, update_epochs=1,
                     progress=False, device="cpu")
    rlhf.train(cfg, policy=copy.deepcopy(model), tokenizer=tok, ref_model=ref,
               reward_fn=gold_score, gold_fn=gold_score, prompts=prompts)
    assert not ref.training                                     # π_ref scored without dropout
    assert all(p.requires_grad for p in ref.parameters())       # a copy of it can still learn
    frozen = copy.deepcopy(model).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        rlhf.train(cfg, policy=frozen, tokenizer=tok, ref_model=ref, reward_fn=gold_score,
                   gold_fn=gold_score, prompts=prompts)


# ---- the RLHF references' implementation details (issue 15) ----------------------------------

def test_kl_estimators_other_than_k1_are_refused_in_the_reward():
    mask = torch.ones(2, 3, dtype=torch.bool)
    lp = torch.zeros(2, 3)
    for kind in ("k2", "k3"):
        with pytest.raises(ValueError, match="biased"):
            token_rewards(torch.zeros(2), lp, lp, mask, 0.1, kind)
        with pytest.raises(ValueError, match="k1"):
            RLHFConfig(kl_estimator=kind)


@pytest.mark.parametrize("temperature", [0.7, 1.3])
def test_recomputed_logprobs_equal_sampling_logprobs_at_other_temperatures(tiny, prompts,
                                                                           temperature):
    model, tok = tiny
    torch.manual_seed(1)
    ro = sample_responses(model, tok, prompts[:8], max_new_tokens=10, temperature=temperature,
                          return_sampling_logprobs=True)
    lp = sequence_logprobs(model, ro.input_ids, ro.attention_mask, ro.n_prompt, temperature)["logp"]
    assert (lp - ro.sampling_logprobs)[ro.mask].abs().max() < 1e-4
    other = sequence_logprobs(model, ro.input_ids, ro.attention_mask, ro.n_prompt)["logp"]
    assert (other - ro.sampling_logprobs)[ro.mask].abs().max() > 1e-2   # T matters


def _one_step_config(**kw):
    return RLHFConfig(**dict(dict(steps=1, batch_size=4, minibatch_size=4, response_len=6,
                                  update_epochs=1, progress=False, device="cpu"), **kw))


def test_a_policy_with_dropout_in_train_mode_starts_at_ratio_one(prompts):
    """Handed over in train mode with dropout 0.1, the policy is scored with dropout off:
    the ratio is exactly 1 at the first (and here only) gradient step."""
    from transformers import AutoModelForCausalLM

    from ppo_core.lm import models

    path = models.tiny_gpt2_path()
    lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, resid_pdrop=0.1,
                                              embd_pdrop=0.1, attn_pdrop=0.1)
    _, tok = models.load_policy("tiny", device="cpu")
    lm.train()
    res = rlhf.train(_one_step_config(), policy=lm, tokenizer=tok, reward_fn=gold_score,
                     gold_fn=gold_score, prompts=prompts)
    rec = res.records[0]
    assert rec["losses/approx_kl"] == 0.0 and rec["losses/clipfrac"] == 0.0
    assert rec["losses/ratio_max"] == 1.0


def test_missing_eos_penalty_lowers_the_score_of_cut_responses(tiny, prompts):
    model, tok = tiny
    import copy

    flat = lambda texts: torch.zeros(len(texts))                          # noqa: E731
    runs = {}
    for penalty in (None, 2.0):
        torch.manual_seed(0)
        cfg = _one_step_config(response_len=3, missing_eos_penalty=penalty, seed=3)
        runs[penalty] = rlhf.train(cfg, policy=copy.deepcopy(model), tokenizer=tok,
                                   reward_fn=flat, gold_fn=flat, prompts=prompts).records[0]
    cut = 1.0 - runs[2.0]["charts/eos_fraction"]
    assert runs[None]["charts/eos_fraction"] == runs[2.0]["charts/eos_fraction"] < 1.0
    assert runs[None]["objective/proxy_reward"] == 0.0
    assert runs[2.0]["objective/proxy_reward"] == pytest.approx(-2.0 * cut)


def test_adam_eps_and_linear_lr_decay(tiny, prompts):
    model, tok = tiny
    import copy

    cfg = _one_step_config(steps=2, anneal_lr=True, lr=1e-4)
    res = rlhf.train(cfg, policy=copy.deepcopy(model), tokenizer=tok, reward_fn=gold_score,
                     gold_fn=gold_score, prompts=prompts)
    assert [r["charts/learning_rate"] for r in res.records] == pytest.approx([1e-4, 5e-5])
    assert RLHFConfig().adam_eps == 1e-5
    assert "objective/proxy_reward_std" in res.records[0]


def test_the_value_head_starts_at_zero(tiny):
    from ppo_core.value_head import CausalLMWithValueHead

    model, tok = tiny
    x = tok(["The battery life"], return_tensors="pt")
    _, values = CausalLMWithValueHead(model)(x["input_ids"], x["attention_mask"], return_values=True)
    assert torch.equal(values, torch.zeros_like(values))


# ---- safe outputs and bad input (issue 13) ------------------------------------------------------

def test_resume_continues_the_run_after_an_interrupt(tiny, prompts, tmp_path):
    """`rlhf --resume`: the checkpoint of the last finished iteration is continued, the log
    keeps each iteration once, and a second run without --resume/--overwrite is refused."""
    model, tok = tiny

    def stop_after_two(record):
        if record["iteration"] == 2:
            raise KeyboardInterrupt

    small = dict(batch_size=4, minibatch_size=4, response_len=4, update_epochs=1, progress=False,
                 device="cpu", log_path=str(tmp_path / "log.jsonl"), save_dir=str(tmp_path / "ck"))
    first = rlhf.train(RLHFConfig(steps=5, **small), reward_fn=gold_score, gold_fn=gold_score,
                       prompts=prompts, callback=stop_after_two)
    assert first.interrupted
    with pytest.raises(ValueError, match="--resume"):
        rlhf.train(RLHFConfig(steps=3, **small), reward_fn=gold_score, gold_fn=gold_score,
                   prompts=prompts)
    again = rlhf.train(RLHFConfig(steps=3, resume=True, **small), reward_fn=gold_score,
                       gold_fn=gold_score, prompts=prompts)
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [1, 2, 3]
    assert [r["iteration"] for r in again.records] == [1, 2, 3]
    meta = json.loads((tmp_path / "ck" / "rlhf_config.json").read_text())
    assert meta["state"]["iteration"] == 3


def _fake_pretrained(folder):
    """A folder that passes for a save_pretrained one until a given file is broken."""
    from safetensors.torch import save_file

    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1}))
    save_file({"w": torch.zeros(64, 64)}, str(folder / "model.safetensors"))
    (folder / "tokenizer.json").write_text("{}")
    return folder


@pytest.mark.parametrize("case,expect", [
    ("file", "is a file"), ("empty", "holds no config.json"),
    ("broken_config", "config.json that is not valid JSON"),
    ("truncated", "truncated model.safetensors"), ("no_weights", "holds no weights"),
    ("bad_tokenizer", "cannot be loaded with from_pretrained")])
def test_bad_model_paths_are_one_line_errors(tmp_path, capsys, monkeypatch, case, expect):
    """`--model PATH` that is not a loadable save_pretrained folder: one line naming the
    argument, the path and what is wrong, exit status 2, before any training."""
    path = tmp_path / "m"
    if case == "file":
        path.write_text("hello")
    elif case == "empty":
        path.mkdir()
    else:
        _fake_pretrained(path)
        if case == "broken_config":
            (path / "config.json").write_text("{bad")
        elif case == "truncated":
            data = (path / "model.safetensors").read_bytes()
            (path / "model.safetensors").write_bytes(data[: len(data) // 2])
        elif case == "no_weights":
            (path / "model.safetensors").unlink()
    monkeypatch.setattr(rlhf, "_default_rewards", lambda *a: pytest.fail("got past the model"))
    assert rlhf.cli_main(["--model", str(path), "--device", "cpu", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "--model" in err and str(path) in err and expect in err, err


def test_a_seeded_run_gives_the_same_numbers_whether_or_not_the_cache_was_built(
        tmp_path, prompts, monkeypatch):
    """The first run in an empty cache builds the tiny GPT-2 (here a cheap stand-in that
    copies the real build and, like it, seeds and draws global random numbers); its first
    record must equal that of a second run, which finds the cache built."""
    import random
    import shutil

    import numpy as np

    from ppo_core.lm import models

    real = models.tiny_gpt2_path()
    monkeypatch.setenv("PPO_COURSE_CACHE", str(tmp_path / "cache"))

    def fake_build(out_dir, spec):
        torch.manual_seed(1234)
        torch.randn(1000)
        random.random()
        np.random.rand(10)
        for f in real.iterdir():
            if f.name != "ppo_course_manifest.json":
                shutil.copy(f, out_dir / f.name)
        return {"fake": True}
    monkeypatch.setattr(models, "_build_tiny_gpt2", fake_build)

    def first_record():
        cfg = RLHFConfig(model="tiny", steps=1, batch_size=4, minibatch_size=4, response_len=4,
                         update_epochs=1, seed=3, progress=False, device="cpu")
        rec = rlhf.train(cfg, reward_fn=gold_score, gold_fn=gold_score, prompts=prompts).records[0]
        return {k: v for k, v in rec.items() if not k.startswith("perf/")}, random.random()

    random.seed(5)
    built = first_record()
    assert json.loads((models.tiny_gpt2_path() / "ppo_course_manifest.json").read_text())["fake"]
    random.seed(5)
    assert first_record() == built


# ---- chapter 07's options: group baselines, KL in the loss, clip-higher, loss aggregation, ptx ----


def _two_iterations(tiny, prompts, **opts):
    import copy

    model, tok = tiny
    cfg = RLHFConfig(steps=2, batch_size=8, minibatch_size=4, response_len=8, update_epochs=1,
                     lr=1e-3, progress=False, device="cpu", seed=0, **opts)
    return rlhf.train(cfg, policy=copy.deepcopy(model), tokenizer=tok, reward_fn=gold_score,
                      gold_fn=gold_score, prompts=prompts)


@pytest.mark.parametrize("opts", [
    dict(advantage="grpo", group_size=4),
    dict(advantage="dr_grpo", group_size=2, loss_agg="seq-mean-token-sum-norm"),
    dict(advantage="rloo", group_size=4, loss_agg="seq-mean-token-mean"),
    dict(advantage="grpo", group_size=4, kl_in="loss", kl_estimator="k3", beta=0.1),
    dict(kl_in="loss", kl_estimator="k2", clip_eps_high=0.28),
    dict(ptx_coef=0.5),
], ids=["grpo", "dr_grpo", "rloo", "grpo_kl_loss", "ppo_k2_loss_clip_higher", "ppo_ptx"])
def test_new_options_run_two_iterations_and_log_the_same_keys(tiny, prompts, opts):
    res = _two_iterations(tiny, prompts, **opts)
    default = _two_iterations(tiny, prompts)
    assert len(res.records) == 2
    extra = {"losses/ptx_loss"} if opts.get("ptx_coef") else set()
    assert set(res.records[-1]) == set(default.records[-1]) | extra
    assert res.records[-1]["objective/kl"] != 0.0                      # the policy moved
    if opts.get("advantage", "gae") != "gae":                          # no critic at all
        for key in ("losses/value_loss", "losses/explained_variance"):
            assert all(r[key] is None for r in res.records), key
        head = res.policy.v_head.summary.weight
        assert head.grad is None or float(head.grad.abs().sum()) == 0.0     # never trained
    if opts.get("ptx_coef"):
        assert all(0.5 < r["losses/ptx_loss"] < 4.0 for r in res.records)   # nats per token


def test_group_sampling_puts_g_copies_of_each_prompt_in_a_row(tiny, prompts):
    import copy

    model, tok = tiny
    cfg = RLHFConfig(steps=1, batch_size=8, minibatch_size=8, group_size=4, advantage="rloo",
                     progress=False, device="cpu")
    st = rlhf._setup(cfg, copy.deepcopy(model), tok, None, gold_score, gold_score, prompts)
    drawn = rlhf._draw_prompts(cfg, st)
    assert len(drawn) == 8 and drawn[:4] == [drawn[0]] * 4 and drawn[4:] == [drawn[4]] * 4
    assert drawn[0] != drawn[4]


def test_group_advantage_is_broadcast_over_each_response():
    from ppo_core.advantages import rloo_advantages

    cfg = RLHFConfig(batch_size=4, minibatch_size=4, group_size=2, advantage="rloo")
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    scores = torch.tensor([1.0, 3.0, 0.0, 2.0])
    rewards, _, _ = token_rewards(scores, torch.zeros(4, 3), torch.zeros(4, 3), mask, 0.1)
    adv = rlhf._group_advantages(cfg, rewards, mask)
    expected = rloo_advantages(scores, 2)                     # [−2, 2, −2, 2]
    assert torch.equal(adv, torch.where(mask, expected[:, None].expand(4, 3), torch.zeros(4, 3)))


def test_kl_in_the_reward_enters_the_group_return():
    # sequence return R − β Σ_t k1_t: the second response drifted 2 nats, at β = 0.5 it pays 1
    cfg = RLHFConfig(batch_size=2, minibatch_size=2, group_size=2, advantage="dr_grpo")
    mask = torch.ones(2, 2, dtype=torch.bool)
    logp = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    rewards, _, _ = token_rewards(torch.tensor([1.0, 1.0]), logp, torch.zeros(2, 2), mask, 0.5)
    adv = rlhf._group_advantages(cfg, rewards, mask)
    assert torch.allclose(adv, torch.tensor([[0.5, 0.5], [-0.5, -0.5]]))


def test_new_options_reject_bad_values():
    with pytest.raises(ValueError, match="needs group_size >= 2"):
        RLHFConfig(advantage="grpo")
    with pytest.raises(ValueError, match="group_size"):
        RLHFConfig(batch_size=8, minibatch_size=4, group_size=3)
    with pytest.raises(ValueError, match="k1 in the loss has zero expected gradient"):
        RLHFConfig(kl_in="loss")
    with pytest.raises(ValueError, match="clip_eps_high"):
        RLHFConfig(clip_eps_high=0.0)
    with pytest.raises(ValueError, match="loss_agg"):
        RLHFConfig(loss_agg="sum")
    with pytest.raises(ValueError, match="ptx_coef"):
        RLHFConfig(ptx_coef=-1.0)
    parser = rlhf.cli_parser()
    from ppo_core.trainers.config import config_from_args
    cfg = config_from_args(RLHFConfig, parser.parse_args(
        ["--advantage", "rloo", "--group-size", "4", "--kl-in", "loss", "--kl-estimator", "k2",
         "--clip-eps-high", "0.28", "--loss-agg", "seq-mean-token-mean", "--ptx-coef", "1"]))
    assert (cfg.advantage, cfg.group_size, cfg.kl_in, cfg.kl_estimator, cfg.clip_eps_high,
            cfg.loss_agg, cfg.ptx_coef) == ("rloo", 4, "loss", "k2", 0.28,
                                            "seq-mean-token-mean", 1.0)


def test_ptx_corpus_nll_of_the_pretrained_model(tiny):
    from ppo_core.trainers import ptx

    model, tok = tiny
    held = ptx.held_out_sentences(64)
    nll = ptx.corpus_nll(model, tok, held)
    # the tiny GPT-2's validation loss at build time was ≈ 1.44 nats per token
    assert 1.0 < nll < 2.0, nll
    ids, attn = ptx.encode_sentences(tok, held[:4])
    assert float(ptx.lm_nll(model, ids, attn).detach()) == pytest.approx(
        ptx.corpus_nll(model, tok, held[:4]), rel=1e-4)

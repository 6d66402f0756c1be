"""The bf16 autocast path of the RLHF trainer, exercised on the CPU (torch autocasts to bf16
on the CPU too), so that CI covers the code that CUDA runs by default (`RLHFConfig.bf16`
is None → on for CUDA only). The same checks on CUDA live in tests/test_gpu.py.

The log-prob checks run on a copy of the tiny GPT-2 whose logits are scaled up to GPT-2's
size (±100, where bf16 steps are 0.5): on the tiny model itself (logits within ±17) every
bf16 error is too small to tell a correct path from a broken one. The bounds and the
numbers they separate are in `conftest.bf16_close_to_fp32`.
"""

from __future__ import annotations

import copy
import math

import torch

from ppo_core.trainers import rlhf
from ppo_core.lm.reward import gold_score
from ppo_core.trainers.rlhf import RLHFConfig, sample_responses, sequence_logprobs


def test_bf16_logprobs_values_entropy_are_float32_and_close_to_fp32(tiny, prompts,
                                                                  bf16_close_to_fp32):
    model, tok = tiny
    # the absolute bounds sit above what correct code gave on 8 samples (mean 0.0021–0.0041,
    # max up to 0.195 nats); the fixture's relative check against bf16-rounded logits on the
    # same sample is what catches rounded logits or a bf16 log-softmax
    bf16_close_to_fp32(model, tok, prompts[:16], seed=3, mean_tol=0.006, max_tol=0.25)


def test_two_bf16_iterations_on_cpu_are_finite_and_start_at_kl_zero(tiny, prompts):
    model, tok = tiny
    cfg = RLHFConfig(steps=2, batch_size=8, minibatch_size=4, response_len=8, update_epochs=1,
                     bf16=True, device="cpu", progress=False, seed=1)
    res = rlhf.train(cfg, policy=copy.deepcopy(model), tokenizer=tok, reward_fn=gold_score,
                     gold_fn=gold_score, prompts=prompts)
    assert len(res.records) == 2
    assert res.records[0]["objective/kl"] == 0.0           # π = π_ref before any update
    for r in res.records:
        bad = {k: v for k, v in r.items() if isinstance(v, float) and not math.isfinite(v)}
        assert not bad, (r["iteration"], bad)
    # the weights stay float32 (autocast casts on the fly), and the policy moved
    assert all(p.dtype == torch.float32 for p in res.policy.parameters())
    assert res.records[1]["objective/kl"] != 0.0


def test_bf16_keeps_the_lm_head_in_float32_where_logits_are_large(tiny, prompts):
    """GPT-2's logits are of order −100, where bf16 steps are 0.5. Scaling the tiny model's
    final norm by 8 gives logits of that size (about −100 to +130); measured on the CPU, a
    bf16 head puts 0.017 nats mean and 0.28 worst on the log-probs, the float32 head of
    `lm_forward` 0.0026 and 0.07."""
    from ppo_core.masking import logprobs_from_logits
    from ppo_core.value_head import lm_forward, position_ids_from_mask

    model, tok = tiny
    big = copy.deepcopy(model)
    with torch.no_grad():
        big.transformer.ln_f.weight.mul_(8)
        big.transformer.ln_f.bias.mul_(8)
    torch.manual_seed(0)
    ro = sample_responses(big, tok, prompts[:16], max_new_tokens=12)
    ids, am, P = ro.input_ids, ro.attention_mask, ro.n_prompt
    pos = position_ids_from_mask(am)

    def logp(bf16, fp32_head):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, _ = lm_forward(big, ids, am, pos, fp32_head=fp32_head)
        return logits, logprobs_from_logits(logits[:, P - 1:-1].float(), ids[:, P:])

    ref_logits, ref = logp(False, False)
    assert float(ref_logits.abs().max()) > 64                    # bf16 spacing ≥ 0.5 here
    head_logits, head = logp(True, True)
    _, plain = logp(True, False)
    assert head_logits.dtype == torch.float32
    err_head = (head - ref)[ro.mask].abs()
    err_plain = (plain - ref)[ro.mask].abs()
    assert float(err_head.mean()) < 0.01 and float(err_head.max()) < 0.15, \
        (float(err_head.mean()), float(err_head.max()))
    assert float(err_plain.mean()) > 2 * float(err_head.mean())
    # the trainer's scoring uses it: sequence_logprobs under bf16 equals the float32 head
    got = sequence_logprobs(big, ids, am, P, bf16=True)["logp"]
    assert torch.allclose(got, head, atol=1e-6)

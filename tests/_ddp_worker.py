"""One rank of an RLHF run for tests/test_distributed.py (not collected by pytest).

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/_ddp_worker.py OUT CONFIG [FLAGS]
    python tests/_ddp_worker.py OUT CONFIG [FLAGS]                    # one process

CONFIG is a JSON object of `RLHFConfig` fields. Each rank trains the tiny GPT-2 on 32 prompts
with the gold scorer as reward, then writes OUT/rank{r}.safetensors (its parameters and the
gradients left by the last step) and OUT/rank{r}.json (records, β, the prompts it sampled,
its torch seed). Flags:

    --seeded-sampler   each response is sampled alone, seeded by its prompt, so that a batch
                       split over ranks holds the same episodes as the whole batch
    --fail-rank R      rank R's reward function raises at iteration 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zlib
from pathlib import Path

import torch


def seeded_sampler(real):
    """`sample_responses` whose response to each prompt depends only on the prompt (sampled
    alone under a seed made from its text), then batched as the real one batches them."""
    from ppo_core.trainers.rlhf import TokenRollout

    def sample(model, tokenizer, prompts, max_new_tokens=16, temperature=1.0, bf16=False,
               min_new_tokens=0, **_):
        responses = []
        for p in prompts:
            with torch.random.fork_rng():
                torch.manual_seed(zlib.crc32(p.encode()))
                one = real(model, tokenizer, [p], max_new_tokens, temperature, bf16,
                           min_new_tokens=min_new_tokens)
            responses.append(one.response_ids[0][one.mask[0]].cpu())           # up to the EOS
        enc = tokenizer(list(prompts), return_tensors="pt", padding=True)
        T = max(len(r) for r in responses)
        ids = torch.full((len(prompts), T), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), T), dtype=torch.bool)
        for i, r in enumerate(responses):
            ids[i, :len(r)], mask[i, :len(r)] = r, True
        texts = [tokenizer.decode(r, skip_special_tokens=True) for r in responses]
        return TokenRollout(list(prompts), texts, torch.cat([enc["input_ids"], ids], dim=1),
                            torch.cat([enc["attention_mask"], mask.long()], dim=1), mask,
                            enc["input_ids"].shape[1])
    return sample


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("config")
    ap.add_argument("--seeded-sampler", action="store_true")
    ap.add_argument("--fail-rank", type=int, default=None)
    args = ap.parse_args()

    from safetensors.torch import save_file

    from ppo_core.lm import models, reward, text
    from ppo_core.trainers import rlhf

    rank = int(os.environ.get("RANK", "0"))
    seen: list[list[str]] = []
    real = rlhf.sample_responses
    sampler = seeded_sampler(real) if args.seeded_sampler else real

    def recording_sampler(model, tokenizer, prompts, *a, **kw):
        seen.append(list(prompts))
        return sampler(model, tokenizer, prompts, *a, **kw)

    rlhf.sample_responses = recording_sampler

    def reward_fn(texts):
        if args.fail_rank == rank and len(seen) >= 2:
            raise RuntimeError(f"injected failure on rank {rank}")
        return reward.gold_score(texts)

    model, tok = models.load_policy("tiny", device="cpu")
    cfg = rlhf.RLHFConfig(**{"device": "cpu", "progress": False, "threads": 1,
                             **json.loads(args.config)})
    res = rlhf.train(cfg, policy=model, tokenizer=tok, reward_fn=reward_fn,
                     gold_fn=reward.gold_score, prompts=text.build_prompts(n=32, seed=1))
    out = Path(args.out)
    tensors = {}
    for name, p in res.policy.named_parameters():
        tensors["param." + name] = p.detach().clone().contiguous()
        if p.grad is not None:
            tensors["grad." + name] = p.grad.detach().clone().contiguous()
    save_file(tensors, str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps({
        "records": res.records, "world_size": res.world_size, "prompts": seen,
        "seed": torch.initial_seed()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

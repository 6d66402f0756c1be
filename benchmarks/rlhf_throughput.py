"""Throughput of one RLHF iteration: generation, scoring, PPO update (issue: the GPT-2 path).

    python benchmarks/rlhf_throughput.py                      # CUDA: gpt2, 128 prompts × 24 tokens
    python benchmarks/rlhf_throughput.py --model tiny --batch 32 --iters 3   # a CPU try

Prints, per iteration, the wall-clock split between generation (KV-cache sampling),
scoring (policy + value head, reference, reward model, gold scorer) and the PPO update
(epochs × minibatches), with episodes per second and response tokens per second; then the
mean over the measured iterations, the peak memory, and the ratio to the goal of the issue
(at most 1 s per iteration of 128 episodes within 20 GB on one H100).

The phase split comes from the trainer's own clocks (`perf/*`, each read after a CUDA
synchronize); the `wall s` column is measured here, also synchronised, from one iteration's
end to the next, so it holds everything an iteration costs (logging included) and is the
number compared with the goal. Peak memory is
`torch.cuda.max_memory_allocated` since just after loading (the weights count, since they
stay allocated), and `max_memory_reserved` (what the caching allocator took from the GPU).

The first `--warmup` iterations (CUDA kernels, allocator) are run but not averaged. With
`--model gpt2` and no hub, GPT-2 small's architecture pre-trained on the course corpus is
used (`ppo_core.lm.models.gpt2_small_path`). Its weights do not change the timing (EOS is
suppressed, so every response has the same length), but its vocabulary does: 1,966 tokens
against the hub model's 50,257, so its LM head is 26x smaller. The script prints the
matmul work per token relative to the hub's `gpt2` so that such a number is read as the
lower bound it is.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GOAL_S_PER_ITER = 1.0
GOAL_MEMORY_GB = 20.0


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    p.add_argument("--model", default="gpt2" if cuda else "tiny",
                   help="tiny, gpt2 or a path (default: gpt2 on CUDA, tiny on CPU)")
    p.add_argument("--batch", type=int, default=128, help="prompts per iteration (default 128)")
    p.add_argument("--response-len", type=int, default=24, help="tokens per response (default 24)")
    p.add_argument("--minibatch", type=int, default=None,
                   help="episodes per gradient step (default: batch/4, at least 1)")
    p.add_argument("--epochs", type=int, default=2,
                   help="PPO epochs per iteration (default 2, the trainer's default)")
    p.add_argument("--stop-at-eos", action="store_true",
                   help="let responses end at EOS (default: EOS is suppressed, so every response "
                        "has exactly --response-len tokens, as the goal specifies)")
    p.add_argument("--iters", type=int, default=4, help="iterations to run (default 4)")
    p.add_argument("--warmup", type=int, default=1, help="iterations left out of the mean (default 1)")
    p.add_argument("--reward", choices=["rm", "gold"], default="rm",
                   help="proxy reward: the learned reward model (rm) or the gold scorer (default rm)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="bf16 autocast (default auto: on for CUDA only, as the trainer does)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch (default 1: fastest on a shared 2-core machine)")
    args = p.parse_args(argv)
    if args.iters <= args.warmup:
        p.error(f"--iters ({args.iters}) must exceed --warmup ({args.warmup})")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)

    from ppo_core.lm import reward
    from ppo_core.trainers import rlhf
    from ppo_core._runtime import resolve_device

    device = resolve_device(args.device)
    mb = args.minibatch or max(1, args.batch // 4)
    cfg = rlhf.RLHFConfig(model=args.model, steps=args.iters, batch_size=args.batch,
                          minibatch_size=mb, response_len=args.response_len,
                          update_epochs=args.epochs, n_prompts=min(640, max(args.batch, 256)),
                          min_response_len=0 if args.stop_at_eos else args.response_len,
                          device=str(device), progress=False,
                          bf16=rlhf.BF16_CHOICES[args.bf16])
    bf16 = cfg.uses_bf16(device)
    t_load = time.perf_counter()
    lm, tok = rlhf.load_policy_and_tokenizer(args.model, device)
    gold = reward.gold_score
    proxy = reward.load_reward_model(device=device).score if args.reward == "rm" else gold
    t_load = time.perf_counter() - t_load
    n_params = sum(p.numel() for p in lm.parameters())
    cfg_lm = lm.config
    vocab = lm.get_output_embeddings().weight.shape[0]
    if getattr(cfg_lm, "model_type", "") == "gpt2" and cfg_lm.n_layer == 12 and cfg_lm.n_embd == 768:
        # weight-matmul work per token ∝ 12·d² per layer + d·V for the LM head
        body, d = 12 * 12 * 768 ** 2, 768
        work = (body + d * vocab) / (body + d * 50257)
        if vocab != 50257:
            print(f"note: vocabulary {vocab:,} (the hub's gpt2 has 50,257): {work:.2f}x the "
                  f"hub model's matmul work per token; times below are a lower bound for it")
    print(f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}"
          f", torch threads {torch.get_num_threads()}; model {args.model} "
          f"({n_params / 1e6:.1f}M parameters), batch {args.batch}, response ≤ {args.response_len} "
          f"tokens, {args.epochs} epoch(s) × {args.batch // mb} minibatches; reward {args.reward}; "
          f"bf16 autocast {'on' if bf16 else 'off'}; "
          f"loading took {t_load:.1f} s")
    if device.type == "cuda":
        rlhf.sync(device)
        torch.cuda.reset_peak_memory_stats(device)
    head = (f"{'iter':>4} {'gen s':>7} {'score s':>8} {'update s':>9} {'total s':>8} {'wall s':>7} "
            f"{'ep/s':>7} {'tok/s':>8} {'len':>5}")
    print(head)
    wall: list[float] = []
    clock = [0.0]

    def show(r):
        rlhf.sync(device)                                   # the GPU's queue is part of the iteration
        now = time.perf_counter()
        wall.append(now - clock[0])
        print(f"{r['iteration']:>4} {r['perf/generate_s']:>7.3f} {r['perf/score_s']:>8.3f} "
              f"{r['perf/update_s']:>9.3f} {r['perf/iteration_s']:>8.3f} {wall[-1]:>7.3f} "
              f"{r['perf/episodes_per_second']:>7.1f} {r['perf/tokens_per_second']:>8.0f} "
              f"{r['charts/response_length']:>5.1f}", flush=True)
        clock[0] = time.perf_counter()           # printing is not part of the next iteration

    rlhf.sync(device)
    clock[0] = time.perf_counter()               # iteration 1's wall time includes the set-up
    res = rlhf.train(cfg, policy=lm, tokenizer=tok, reward_fn=proxy, gold_fn=gold, callback=show)
    measured = res.records[args.warmup:]
    mean = {k: sum(r[k] for r in measured) / len(measured)
            for k in ("perf/generate_s", "perf/score_s", "perf/update_s", "perf/iteration_s")}
    total = sum(wall[args.warmup:]) / len(measured)          # synchronised wall clock
    n_tokens = sum(r["charts/response_length"] * args.batch for r in measured) / len(measured)
    print(f"mean of {len(measured)} iteration(s): generation {mean['perf/generate_s']:.3f} s "
          f"({100 * mean['perf/generate_s'] / total:.0f}%), scoring {mean['perf/score_s']:.3f} s "
          f"({100 * mean['perf/score_s'] / total:.0f}%), update {mean['perf/update_s']:.3f} s "
          f"({100 * mean['perf/update_s'] / total:.0f}%); {total:.3f} s/iteration wall "
          f"(trainer's clock {mean['perf/iteration_s']:.3f} s), {args.batch / total:.1f} episodes/s, "
          f"{n_tokens / total:.0f} tokens/s")
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 30
        reserved = torch.cuda.max_memory_reserved(device) / 2 ** 30
        print(f"peak GPU memory {peak:.2f} GB allocated, {reserved:.2f} GB reserved "
              f"(goal ≤ {GOAL_MEMORY_GB:.0f} GB)")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
        print(f"peak process memory (RSS) {peak:.2f} GB")
    scaled = total * 128 / args.batch
    print(f"ratio to the goal ({GOAL_S_PER_ITER:.0f} s per 128-episode iteration on one H100): "
          f"{scaled / GOAL_S_PER_ITER:.2f}× "
          f"({'measured' if args.batch == 128 else 'scaled linearly from batch ' + str(args.batch)}"
          f" on {device.type}{'' if device.type == 'cuda' else '; the goal is for a GPU'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

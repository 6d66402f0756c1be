"""Regenerate the runs that chapter 07 reads (fixed seeds).

    python chapters/data/07/make_runs.py                   # everything (~8 min on one CPU core)
    python chapters/data/07/make_runs.py --only frontier   # one group: frontier, dpo_budget,
                                                           #   placement, clip_higher, ptx, cost
    python chapters/data/07/make_runs.py --list            # the runs, from the code

Every run is one of `ppo_core`'s own trainers (`ppo_core.trainers.rlhf.train` for PPO, GRPO and
RLOO, `ppo_core.trainers.dpo.train` for DPO) on the course's tiny GPT-2, the unbiased reward
model and the gold judge that chapter 05 uses, writing its standard JSONL log into this
folder. After training, `final_eval` measures the policy on the 128 evaluation prompts that no
run trains on (gold, proxy, the KL to π_ref on those fresh samples, entropy) and its corpus
likelihood on held-out sentences; `manifest.json` records each run's configuration, wall time,
torch version and that evaluation. The `cost` group runs each method for a few iterations in a
fresh process and records what it held and did (`cost.json`): models and parameters, forward
passes with and without gradient, optimizer steps, seconds per iteration, peak resident memory.

The chapter imports this file for the run definitions, `final_eval` and `PassCounter`.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

# ----------------------------------------------------------------------------------------
# The bench: one task, one reward model, one gold judge, one sampling budget
# ----------------------------------------------------------------------------------------

#: every online method: 20 iterations of 32 sampled responses (640 in all), chapter 05's sizes
ONLINE = dict(steps=20, batch_size=32, minibatch_size=16, response_len=16, update_epochs=2,
              lr=3e-4, clip_eps=0.2, n_samples=4)
#: the methods, as options of the one RLHF trainer (`advantage`, `group_size`, `kl_in`, ...)
METHODS = {
    "ppo": dict(),                                                    # GAE critic, KL in reward (k1)
    "grpo": dict(advantage="grpo", group_size=4, kl_in="loss", kl_estimator="k3",
                 loss_agg="seq-mean-token-mean"),                     # Shao et al. 2024
    "rloo": dict(advantage="rloo", group_size=4),                     # KL in reward, as TRL's RLOO
}
#: DPO: 1280 pairs (2560 responses sampled once from π_ref, four times the online methods'
#: 640), one pass over them
DPO = dict(n_pairs=1280, steps=80, batch_size=16, lr=2e-4, response_len=16, eval_every=10,
           n_samples=4)
#: DPO on the online methods' budget: 320 pairs (640 responses), two passes
DPO_SAME_BUDGET = dict(DPO, n_pairs=320, steps=40, lr=5e-4, eval_every=5)
DPO_BUDGET_BETA = 0.1
BETAS = [0.02, 0.1, 0.5]             # β of the online methods (in the reward or the loss)
DPO_BETAS = [0.05, 0.1, 0.3]         # DPO's β: the same role, another scale (see the chapter)
SEEDS = [0, 1]
PLACEMENT = [("loss", "k2"), ("loss", "k3")]      # beside the frontier's PPO (reward, k1)
PLACEMENT_BETA = 0.1
CLIP_HIGHER = dict(ONLINE, steps=25, lr=1e-3, update_epochs=4, beta=0.0, advantage="grpo",
                   group_size=4)                  # DAPO's setting: no KL term, clip-higher
EPS_HIGH = [None, 0.28, 0.5]                      # None: symmetric, ε_high = ε = 0.2
PTX_BETA = 0.02
PTX_COEFS = [1.0, 4.0]                            # beside the frontier's PPO β = 0.02 (γ = 0)
N_EVAL_PROMPTS = 128
N_HELD_OUT = 300                                  # corpus sentences for the likelihood


def _tag(x) -> str:
    return "none" if x is None else f"{x:g}"


def prompt_split():
    """(training prompts, evaluation prompts): chapter 05's 512 / 128 split of the pool."""
    from ppo_core.lm import text

    pool = text.build_prompts(n=640, seed=1)
    return pool[:512], pool[512:]


def runs() -> dict[str, dict]:
    """name -> {"group", "method", "trainer", "config"}: every run this script makes."""
    out = {}
    for m, opts in METHODS.items():
        for b in BETAS:
            for s in SEEDS:
                out[f"{m}_beta{_tag(b)}_seed{s}"] = dict(
                    group="frontier", method=m, trainer="rlhf",
                    config=dict(ONLINE, **opts, beta=b, seed=s))
    for b in DPO_BETAS:
        for s in SEEDS:
            out[f"dpo_beta{_tag(b)}_seed{s}"] = dict(group="frontier", method="dpo", trainer="dpo",
                                                     config=dict(DPO, beta=b, seed=s))
    for s in SEEDS:
        out[f"dpo_320pairs_seed{s}"] = dict(group="dpo_budget", method="dpo", trainer="dpo",
                                            config=dict(DPO_SAME_BUDGET, beta=DPO_BUDGET_BETA, seed=s))
    for where, k in PLACEMENT:
        for s in SEEDS:
            out[f"ppo_kl_{where}_{k}_seed{s}"] = dict(
                group="placement", method="ppo", trainer="rlhf",
                config=dict(ONLINE, beta=PLACEMENT_BETA, kl_in=where, kl_estimator=k, seed=s))
    for e in EPS_HIGH:
        for s in SEEDS:
            out[f"grpo_eps_high{_tag(e)}_seed{s}"] = dict(
                group="clip_higher", method="grpo", trainer="rlhf",
                config=dict(CLIP_HIGHER, clip_eps_high=e, seed=s))
    for c in PTX_COEFS:
        for s in SEEDS:
            out[f"ppo_ptx{_tag(c)}_seed{s}"] = dict(
                group="ptx", method="ppo", trainer="rlhf",
                config=dict(ONLINE, beta=PTX_BETA, ptx_coef=c, seed=s))
    return out


def frontier_name(method: str, beta: float, seed: int) -> str:
    return f"{method}_beta{_tag(beta)}_seed{seed}"


# ----------------------------------------------------------------------------------------
# Measuring a trained policy
# ----------------------------------------------------------------------------------------

@torch.no_grad()
def final_eval(policy, ref_model, tokenizer, prompts, reward_fn, gold_fn, held_out=None,
               seed: int = 0, response_len: int = 16) -> dict:
    """The policy on `prompts` (one seeded sample each): mean gold and proxy, the KL to π_ref
    on those samples (mean over responses of Σ_t log π/π_ref, nats per response), entropy per
    token, '!' per response, the fraction of distinct responses; with `held_out` sentences,
    their mean NLL per token under the policy (`ptx.corpus_nll`)."""
    from ppo_core.trainers import ptx
    from ppo_core.trainers.rlhf import _fork_rng, sample_responses, sequence_logprobs

    lm = getattr(policy, "pretrained_model", policy)
    with _fork_rng(seed, next(lm.parameters()).device):
        ro = sample_responses(lm, tokenizer, list(prompts), response_len)
    pol = sequence_logprobs(lm, ro.input_ids, ro.attention_mask, ro.n_prompt, with_entropy=True)
    ref = sequence_logprobs(ref_model, ro.input_ids, ro.attention_mask, ro.n_prompt)
    k1 = torch.where(ro.mask, pol["logp"] - ref["logp"], torch.zeros_like(pol["logp"]))
    texts = ro.texts
    out = {"gold": float(torch.as_tensor(gold_fn(texts)).mean()),
           "proxy": float(torch.as_tensor(reward_fn(texts)).mean()),
           "kl": float(k1.sum(dim=1).mean()),
           "entropy": float(pol["entropy"][ro.mask].mean()),
           "bangs": sum(r.count("!") for r in ro.responses) / len(texts),
           "distinct": len(set(ro.responses)) / len(texts),
           "samples": texts[:4]}
    if held_out is not None:
        out["corpus_nll"] = ptx.corpus_nll(lm, tokenizer, held_out)
    return out


class PassCounter:
    """Counts, per model, the sequences that went through a forward pass with gradient (each
    backpropagated once), without gradient, and through `generate` (one call per batch,
    whatever the length), and the optimizer steps, while the block runs.

        with PassCounter({"policy": lm, "reference": ref, "reward model": rm.backbone}) as c:
            ...                                     # train
        c.counts        # {"policy": {"grad": 96, "no_grad": 32, "generate": 32}, ...}
        c.steps         # optimizer steps
    """

    def __init__(self, models: dict):
        self.models = models
        self.counts = {name: {"grad": 0, "no_grad": 0, "generate": 0} for name in models}
        self.steps = 0
        self._handles, self._generating, self._patched = [], set(), []

    def __enter__(self):
        for name, m in self.models.items():
            self._handles.append(m.register_forward_hook(self._hook(name), with_kwargs=True))
            if hasattr(m, "generate"):
                self._patched.append(m)
                m.generate = self._wrap_generate(name, m.generate)
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self._handles.append(register_optimizer_step_post_hook(
            lambda *a: setattr(self, "steps", self.steps + 1)))
        return self

    def _hook(self, name):
        def hook(module, args, kwargs, output):
            if name in self._generating:
                return
            ids = kwargs.get("input_ids", args[0] if args else None)
            self.counts[name]["grad" if torch.is_grad_enabled() else "no_grad"] += int(ids.shape[0])
        return hook

    def _wrap_generate(self, name, generate):
        def wrapped(*args, **kwargs):
            self._generating.add(name)
            try:
                out = generate(*args, **kwargs)
            finally:
                self._generating.discard(name)
            ids = kwargs.get("input_ids", args[0] if args else None)
            self.counts[name]["generate"] += int(ids.shape[0])
            return out
        return wrapped

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        for m in self._patched:
            del m.generate                           # the class's method again
        return False


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------

def load_world():
    """(tiny GPT-2, tokenizer, reward model, gold, train prompts, eval prompts)."""
    from ppo_core.lm import models, reward

    base, tok = models.load_policy("tiny", device="cpu")
    rm = reward.load_reward_model(device="cpu")
    train_p, eval_p = prompt_split()
    return base, tok, rm, reward.gold_score, train_p, eval_p


def train_one(spec: dict, world, log_path=None, progress: bool = False, policy=None, **kwargs):
    """Train one run (an entry of `runs()`, or any {"trainer", "config"}) from the tiny GPT-2
    (or `policy`, trained in place; `kwargs` go to the trainer, e.g. DPO's `pairs`); returns
    (records, trained policy, reference)."""
    from ppo_core.trainers import dpo, rlhf

    base, tok, rm, gold, train_p, _ = world
    policy = copy.deepcopy(base) if policy is None else policy
    cfg = dict(spec["config"], progress=progress, device="cpu",
               log_path=str(log_path) if log_path else None, overwrite=bool(log_path))
    if spec["trainer"] == "dpo":
        res = dpo.train(dpo.DPOConfig(**cfg), policy=policy, tokenizer=tok, ref_model=base,
                        gold_fn=gold, reward_fn=rm.score, prompts=train_p, **kwargs)
    else:
        res = rlhf.train(rlhf.RLHFConfig(**cfg), policy=policy, tokenizer=tok, ref_model=base,
                         reward_fn=rm.score, gold_fn=gold, prompts=train_p, **kwargs)
    return res.records, res.policy, res.ref_model


def run_one(name: str, world, held_out, out_dir: Path = HERE) -> dict:
    """Train run `name`, write `out_dir/name.jsonl`; return its manifest entry."""
    spec = runs()[name]
    t0 = time.perf_counter()
    _, policy, ref = train_one(spec, world, Path(out_dir) / f"{name}.jsonl")
    seconds = time.perf_counter() - t0
    base, tok, rm, gold, _, eval_p = world
    ev = final_eval(policy, base, tok, eval_p, rm.score, gold, held_out)
    return dict(spec, seconds=round(seconds, 1), torch=torch.__version__, eval=ev)


def load(name: str, rerun: bool = False, world=None, held_out=None) -> tuple[list[dict], dict]:
    """(records, final evaluation) of run `name`: read from this folder, or (`rerun=True`)
    trained afresh into `ppo_core.cache_dir()/ch07_runs` unless an earlier re-run left it
    there (`world` and `held_out` as `load_world()` and `held_out_sentences` give them)."""
    from ppo_core.metrics import read_log

    if name not in runs():
        raise ValueError(f"name must be one of {sorted(runs())}, got {name!r}")
    folder = HERE
    if rerun:
        import ppo_core

        folder = ppo_core.cache_dir() / "ch07_runs"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "manifest.json"
        man = json.loads(path.read_text()) if path.exists() else {}
        if name not in man or not (folder / f"{name}.jsonl").exists():
            from ppo_core.trainers.ptx import held_out_sentences

            held_out = held_out if held_out is not None else held_out_sentences(N_HELD_OUT)
            man[name] = run_one(name, world or load_world(), held_out, out_dir=folder)
            path.write_text(json.dumps(man, indent=1))
    man = json.loads((folder / "manifest.json").read_text())
    return read_log(folder / f"{name}.jsonl"), man[name]["eval"]


def manifest() -> dict:
    return json.loads((HERE / "manifest.json").read_text())


# ----------------------------------------------------------------------------------------
# Cost: each method in a fresh process
# ----------------------------------------------------------------------------------------

COST_ITERATIONS = 4


def _rss_mb() -> float:
    """Peak resident memory of this process so far, MB (Linux reports ru_maxrss in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cost_probe(method: str) -> dict:
    """Run `method` (β = 0.1) for COST_ITERATIONS iterations in this process and measure it."""
    from ppo_core.trainers import dpo, rlhf

    base, tok, rm, gold, train_p, _ = load_world()
    rss_loaded = _rss_mb()
    policy = copy.deepcopy(base)
    models = {"policy": policy, "reference": base, "reward model": rm.backbone}
    if method == "dpo":                   # its data, made once before training: not counted
        cfg = dpo.DPOConfig(**dict(DPO, beta=0.1, steps=COST_ITERATIONS, seed=0, eval_every=0),
                            progress=False, device="cpu")
        pairs = dpo.config_pairs(cfg, base, tok, train_p)
    t0 = time.perf_counter()
    with PassCounter(models) as counter:
        if method == "dpo":
            res = dpo.train(cfg, policy=policy, tokenizer=tok, ref_model=base, gold_fn=gold,
                            prompts=train_p, pairs=pairs)
        else:
            cfg = rlhf.RLHFConfig(**dict(ONLINE, **METHODS[method], beta=0.1, seed=0,
                                         steps=COST_ITERATIONS), progress=False, device="cpu")
            res = rlhf.train(cfg, policy=policy, tokenizer=tok, ref_model=base,
                             reward_fn=rm.score, gold_fn=gold, prompts=train_p)
    seconds = time.perf_counter() - t0
    held = {"policy": n_params(policy), "reference": n_params(base)}
    if method == "ppo":
        held["value head (on the policy's trunk)"] = n_params(res.policy.v_head)
    if method != "dpo":
        held["reward model"] = n_params(rm)
    its = [r["perf/iteration_s"] for r in res.records[1:]]       # the first one warms up
    return {"method": method, "iterations": COST_ITERATIONS, "params": held,
            "passes_per_iteration": {k: {kk: vv / COST_ITERATIONS for kk, vv in v.items()}
                                     for k, v in counter.counts.items()},
            "optimizer_steps_per_iteration": counter.steps / COST_ITERATIONS,
            "seconds_per_iteration": sum(its) / len(its), "seconds_total": round(seconds, 1),
            "peak_rss_mb_after_loading": round(rss_loaded, 1),
            "peak_rss_mb": round(_rss_mb(), 1), "torch": torch.__version__}


def make_cost() -> dict:
    """Each method's `cost_probe` in a fresh one-thread process; writes cost.json."""
    out = {}
    for m in [*METHODS, "dpo"]:
        proc = subprocess.run([sys.executable, str(Path(__file__)), "--cost-probe", m],
                              capture_output=True, text=True, check=True)
        out[m] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"cost {m:5s} {out[m]['seconds_per_iteration']:.2f} s/it, "
              f"peak RSS {out[m]['peak_rss_mb']:.0f} MB", flush=True)
    (HERE / "cost.json").write_text(json.dumps(out, indent=1))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=None, help="groups or run names to make")
    p.add_argument("--list", action="store_true", help="list the runs and exit")
    p.add_argument("--cost-probe", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(1)          # the tiny models are fastest on one thread
    if args.cost_probe:
        print(json.dumps(cost_probe(args.cost_probe)))
        return 0
    table = runs()
    if args.list:
        for name, spec in table.items():
            print(f"{name:28s} {spec['group']:12s} {spec['method']}")
        return 0
    chosen = {n: s for n, s in table.items()
              if args.only is None or n in args.only or s["group"] in args.only}
    if args.only is None or "cost" in args.only:
        make_cost()
    if not chosen:
        return 0
    from ppo_core.trainers.ptx import held_out_sentences

    world, held = load_world(), held_out_sentences(N_HELD_OUT)
    path = HERE / "manifest.json"
    for name in chosen:
        entry = run_one(name, world, held)
        # re-read before writing: two groups may run in parallel processes
        man = json.loads(path.read_text()) if path.exists() else {}
        man[name] = entry
        path.write_text(json.dumps(dict(sorted(man.items())), indent=1))
        ev = entry["eval"]
        print(f"{name:28s} {entry['seconds']:6.1f} s  gold {ev['gold']:+.3f}  kl {ev['kl']:6.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Direct Preference Optimisation on the tiny GPT-2 (chapter 07).

DPO (Rafailov et al. 2023) skips the reward model and the RL loop: it trains the policy
directly on preference pairs (x, y_w, y_l) with the loss of `ppo_core.losses.dpo_loss`,

    L(θ) = −E[ log σ( β·[(log π_θ(y_w|x) − log π_ref(y_w|x)) − (log π_θ(y_l|x) − log π_ref(y_l|x))] ) ],

whose optimum is the optimum of the KL-regularised RLHF objective E[R] − β·KL(π‖π_ref) for
the Bradley-Terry reward the pairs imply. It is *offline*: the pairs are collected once.

The pairs are of the kind the course's reward models learn from (`ppo_core.lm.reward`): texts
of the tiny GPT-2 labelled by the same `SimulatedAnnotator` (Bradley-Terry on the gold score,
with the reward model's temperature τ and optional '!' bias, `reward.reward_spec`). Here both
texts of a pair continue the same review opener: two responses sampled from π_ref for each
prompt of the RLHF prompt pool (`preference_pairs`).

Every `eval_every` steps the trainer samples fresh responses from π_θ and logs what the RLHF
trainer logs on its rollouts, under the same keys: `objective/gold_reward`, `objective/kl`
(the batch mean of Σ_t k1_t to π_ref), `losses/entropy`, `charts/response_length` (and
`objective/proxy_reward` when a reward function is given); every step logs
`losses/policy_loss` (the DPO loss), `losses/grad_norm` and TRL's `rewards/chosen`,
`rewards/rejected`, `rewards/margins`, `rewards/accuracies` (the implicit rewards
β·(log π − log π_ref)).

Shapes: N pairs, b pairs per step, P prompt tokens, T response tokens.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .._checks import positive_finite
from .._runtime import resolve_device, torch_threads
from ..losses import dpo_loss
from ..masking import masked_mean
from .config import TrainerConfig, arg, config_from_args
from .config import build_parser as build_parser_for
from .rlhf import (_fork_rng, _reference_copy, load_policy_and_tokenizer, sample_responses,
                   sequence_logprobs)
from .run import Run, TrainingDiverged, check_finite, check_output_paths

__all__ = ["DPOConfig", "DPOResult", "PreferencePairs", "preference_pairs", "config_pairs",
           "pair_logprobs",
           "train", "build_parser", "cli_main"]


@dataclass
class DPOConfig(TrainerConfig):
    """Every setting of a DPO run. Defaults suit the tiny GPT-2 on two CPU cores."""

    model: str = arg("tiny", "policy (and reference) to start from: tiny, gpt2 or a local "
                     "save_pretrained folder")
    reward_bias: str | None = arg(None, "annotators who label the pairs: none (unbiased) or "
                                  "exclamation (they like '!'), as for the reward models",
                                  choices=(None, "exclamation"))
    n_pairs: int = arg(1280, "N: preference pairs, sampled once from π_ref (two responses to one "
                       "prompt each) and labelled by the simulated annotator (chapter 07: with "
                       "320 the tiny model fits its pairs and gains no gold)")
    steps: int = arg(80, "gradient steps (each on one batch of pairs; the pairs are reshuffled "
                     "after each pass)")
    batch_size: int = arg(16, "b: pairs per gradient step")
    beta: float = arg(0.1, "β: strength of the implicit KL regularisation (TRL's default 0.1)")
    lr: float = arg(2e-4, "Adam learning rate")
    max_grad_norm: float = arg(1.0, "gradient-norm clip per step")
    response_len: int = arg(16, "T: maximum tokens per response (pairs and evaluation samples)")
    eval_every: int = arg(5, "sample fresh responses from π_θ and log gold and KL every this many "
                          "steps, and at the first and last (0: never; those keys are then None)")
    eval_size: int = arg(32, "prompts per evaluation (drawn from the pool like an RLHF batch)")
    n_prompts: int = arg(256, "size of the prompt pool the pairs and evaluations draw from")
    prompt_seed: int = arg(1, "seed of `ppo_core.lm.text.build_prompts`")
    seed: int = arg(0, "seed of the pairs, their labels, the batch order and evaluation sampling")
    device: str | None = arg(None, "cpu, cuda, ... (none: CUDA when available)")
    threads: int | None = arg(None, "torch CPU threads while training (none: torch's choice)")
    log_path: str | None = arg(None, "JSONL metrics log (none: keep records in memory only)",
                               flag="--log")
    save_dir: str | None = arg(None, "save the trained policy and tokenizer here at the end "
                               "(save_pretrained; none: no checkpoint)", flag="--save")
    overwrite: bool = arg(False, "replace an existing log and checkpoint instead of refusing")
    n_samples: int = arg(3, "sample texts written to each evaluated log record")
    progress: bool = arg(True, "show a tqdm progress bar")

    def validate(self) -> None:
        if isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int) \
                or self.eval_every < 0:
            raise ValueError(f"eval_every must be an int >= 0, got {self.eval_every!r}")
        for name in ("n_pairs", "steps", "batch_size", "response_len", "eval_size", "n_prompts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.batch_size > self.n_pairs:
            raise ValueError(f"batch_size={self.batch_size} must be at most n_pairs={self.n_pairs}")
        positive_finite(self.beta, "beta")
        positive_finite(self.lr, "lr")
        positive_finite(self.max_grad_norm, "max_grad_norm")
        from ..lm.reward import BIASES

        if self.reward_bias not in BIASES:
            raise ValueError(f"reward_bias must be one of {BIASES}, got {self.reward_bias!r}")
        if not isinstance(self.n_samples, int) or self.n_samples < 0:
            raise ValueError(f"n_samples must be an int >= 0, got {self.n_samples!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be an int >= 1 or None, got {self.threads!r}")


@dataclass
class DPOResult:
    """What `train` returns: the records, the trained policy, the reference, the pairs."""

    records: list[dict]
    policy: torch.nn.Module
    ref_model: torch.nn.Module
    tokenizer: object
    pairs: "PreferencePairs"
    config: DPOConfig
    interrupted: bool = False


# --------------------------------------------------------------------------------------------
# Preference pairs
# --------------------------------------------------------------------------------------------

@dataclass
class PreferencePairs:
    """N labelled pairs: the prompt's token ids, the chosen and rejected responses' token ids
    (up to and including their first EOS) and texts."""

    prompts: list[str]
    prompt_ids: list[list[int]]
    chosen_ids: list[list[int]]
    rejected_ids: list[list[int]]
    chosen: list[str]
    rejected: list[str]

    def __len__(self) -> int:
        return len(self.prompts)


@torch.no_grad()
def preference_pairs(ref_model, tokenizer, prompts: list[str], n_pairs: int, annotator,
                     response_len: int = 16, seed: int = 0, chunk: int = 256,
                     progress: bool = False) -> PreferencePairs:
    """Sample two responses from `ref_model` for each of `n_pairs` prompts (drawn from
    `prompts`, with replacement when the pool is smaller) and let `annotator` (a
    `reward.SimulatedAnnotator`) pick one of each pair on the full texts (prompt + response)."""
    from tqdm.auto import tqdm

    if not isinstance(n_pairs, int) or n_pairs < 1 or not prompts:
        raise ValueError(f"need n_pairs >= 1 and a non-empty prompt pool, got {n_pairs!r}, "
                         f"{len(prompts)} prompts")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(prompts), (n_pairs,), generator=g).tolist()
    doubled = [prompts[i] for i in idx for _ in (0, 1)]               # p0, p0, p1, p1, ...
    p_ids, r_ids, texts = [], [], []
    device = next(ref_model.parameters()).device
    with _fork_rng(seed, device):
        for i in tqdm(range(0, len(doubled), chunk), desc="preference pairs", leave=False,
                      disable=not progress):
            ro = sample_responses(ref_model, tokenizer, doubled[i:i + chunk], response_len)
            P = ro.n_prompt
            for b in range(len(ro.prompts)):
                p_ids.append(ro.input_ids[b, :P][ro.attention_mask[b, :P].bool()].tolist())
                r_ids.append(ro.response_ids[b][ro.mask[b]].tolist())
            texts += ro.texts
    a_wins = annotator.prefer(texts[0::2], texts[1::2]).bool().tolist()   # (N,)
    pick = [(0, 1) if w else (1, 0) for w in a_wins]
    return PreferencePairs(
        prompts=[doubled[2 * k] for k in range(n_pairs)],
        prompt_ids=[p_ids[2 * k] for k in range(n_pairs)],
        chosen_ids=[r_ids[2 * k + c] for k, (c, _) in enumerate(pick)],
        rejected_ids=[r_ids[2 * k + r] for k, (_, r) in enumerate(pick)],
        chosen=[texts[2 * k + c] for k, (c, _) in enumerate(pick)],
        rejected=[texts[2 * k + r] for k, (_, r) in enumerate(pick)])


def config_pairs(cfg: "DPOConfig", ref_model, tokenizer, prompts: list[str]) -> PreferencePairs:
    """The pairs `train` makes for `cfg`: `cfg.n_pairs` from `ref_model`, labelled by the
    annotators of the reward model for `cfg.reward_bias` (`reward.reward_spec`: τ, bias)."""
    from ..lm import reward

    spec = reward.reward_spec(cfg.reward_bias)
    annotator = reward.SimulatedAnnotator(spec.temperature, spec.bias, spec.bias_strength,
                                          seed=cfg.seed)
    return preference_pairs(ref_model, tokenizer, prompts, cfg.n_pairs, annotator,
                            cfg.response_len, cfg.seed, progress=cfg.progress)


def _collate(prompt_ids: list[list[int]], response_ids: list[list[int]], pad: int, device):
    """Left-padded prompts, right-padded responses: ids and attention mask `(B, P+T)`,
    response mask `(B, T)`, and P."""
    P = max(len(p) for p in prompt_ids)
    T = max(len(r) for r in response_ids)
    ids = torch.full((len(prompt_ids), P + T), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for b, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        ids[b, P - len(p):P] = torch.tensor(p)
        ids[b, P:P + len(r)] = torch.tensor(r)
        attn[b, P - len(p):P + len(r)] = 1
    return ids.to(device), attn.to(device), attn[:, P:].bool().to(device), P


def pair_logprobs(model, pairs: PreferencePairs, idx: list[int], pad: int, device):
    """`(log π(y_w|x), log π(y_l|x))`, each `(b,)`: response log-probs summed over tokens, for
    the pairs `idx`, in one forward pass over the 2b sequences (chosen first)."""
    prompts = [pairs.prompt_ids[i] for i in idx] * 2
    responses = [pairs.chosen_ids[i] for i in idx] + [pairs.rejected_ids[i] for i in idx]
    ids, attn, mask, P = _collate(prompts, responses, pad, device)
    logp = sequence_logprobs(model, ids, attn, P)["logp"]                # (2b, T)
    seq = torch.where(mask, logp, torch.zeros_like(logp)).sum(dim=1)     # Σ_t log π(y_t|·)
    return seq[:len(idx)], seq[len(idx):]


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------

@dataclass
class _State:
    policy: torch.nn.Module
    ref_model: torch.nn.Module
    tokenizer: object
    optimizer: torch.optim.Optimizer
    pairs: PreferencePairs
    prompts: list
    gen: torch.Generator
    gold_fn: Callable
    reward_fn: Callable | None
    device: torch.device
    order: list
    eval_gen: torch.Generator       # evaluation draws its own randomness: it never changes training


def _setup(cfg: DPOConfig, policy, tokenizer, ref_model, gold_fn, reward_fn, prompts,
           pairs) -> _State:
    from ..lm import reward, text

    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    if policy is None:
        policy, tokenizer = load_policy_and_tokenizer(cfg.model, device)
    elif tokenizer is None:
        raise ValueError("tokenizer is required when a policy is passed")
    policy.to(device).eval()                     # dropout off: log-probs are deterministic
    ref_model = _reference_copy(policy) if ref_model is None else ref_model.to(device).eval()
    prompts = list(prompts) if prompts is not None else text.build_prompts(cfg.n_prompts,
                                                                           cfg.prompt_seed)
    if pairs is None:
        pairs = config_pairs(cfg, ref_model, tokenizer, prompts)
    if len(pairs) < cfg.batch_size:
        raise ValueError(f"{len(pairs)} pairs are fewer than batch_size={cfg.batch_size}")
    opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=cfg.lr)
    return _State(policy, ref_model, tokenizer, opt, pairs, prompts,
                  torch.Generator().manual_seed(cfg.seed), gold_fn or reward.gold_score,
                  reward_fn, device, [], torch.Generator().manual_seed(cfg.seed + 1))


def train(config: DPOConfig | None = None, *, policy=None, tokenizer=None, ref_model=None,
          gold_fn: Callable | None = None, reward_fn: Callable | None = None,
          prompts: list[str] | None = None, pairs: PreferencePairs | None = None,
          callback: Callable | None = None) -> DPOResult:
    """DPO on simulated preference pairs; one JSONL record per gradient step (`_step`).

    Args:
        config: a `DPOConfig` (defaults if None).
        policy, tokenizer: a causal LM to train in place and its tokenizer (default: load
            `config.model`). ref_model: frozen π_ref (default: a copy of the policy).
        gold_fn: texts → `(B,)` gold score for evaluation (default `reward.gold_score`);
            reward_fn: optional texts → `(B,)` proxy, logged as objective/proxy_reward.
        prompts: the prompt pool (default `text.build_prompts(config.n_prompts)`).
        pairs: `PreferencePairs` to train on (default: `preference_pairs` from π_ref).
        callback: `callback(record)` after each step.

    Returns `DPOResult`; on Ctrl-C the log so far is kept and `interrupted` is True. Raises
    `TrainingDiverged` if the loss or the gradient stops being finite.
    """
    cfg = config if config is not None else DPOConfig()
    if not isinstance(cfg, DPOConfig):
        raise ValueError(f"config must be a DPOConfig, got {type(cfg).__name__}")
    check_output_paths(cfg.log_path, cfg.save_dir, False, cfg.overwrite,
                       checkpoint_files=checkpoint_files)
    with torch_threads(cfg.threads) if cfg.threads else contextlib.nullcontext():
        st = _setup(cfg, policy, tokenizer, ref_model, gold_fn, reward_fn, prompts, pairs)
        run = Run(cfg.log_path, overwrite=cfg.overwrite, total=cfg.steps, desc="DPO",
                  progress=cfg.progress, callback=callback,
                  save=(lambda it, final: _save(st, cfg)) if cfg.save_dir else None,
                  postfix=lambda r: {"loss": f"{r['losses/policy_loss']:.3f}",
                                     "acc": f"{r['rewards/accuracies']:.2f}"})
        with run:
            for it in run.iterations(0, cfg.steps):
                run.log_record(_step(cfg, st, it))
    return DPOResult(run.records, st.policy, st.ref_model, st.tokenizer, st.pairs, cfg,
                     run.interrupted)


CHECKPOINT_META = "dpo_config.json"


def checkpoint_files(directory) -> set[str]:
    """The files of a DPO checkpoint in `directory` (empty if it holds none)."""
    from ..lm.cache import manifest_files

    return manifest_files(directory, CHECKPOINT_META)


def _save(st: _State, cfg: DPOConfig) -> Path:
    """The policy and tokenizer with `save_pretrained`, and the run config (atomic swap)."""
    import json

    from ..lm.cache import atomic_build

    def write(tmp: Path) -> None:
        st.policy.save_pretrained(tmp)
        st.tokenizer.save_pretrained(str(tmp))
        (tmp / CHECKPOINT_META).write_text(json.dumps(cfg.to_dict(), indent=1), encoding="utf-8")

    return atomic_build(Path(cfg.save_dir), write, {"kind": "dpo checkpoint"})


def _next_batch(cfg: DPOConfig, st: _State) -> list[int]:
    """The next b pair indices: passes over the pairs, reshuffled after each."""
    if len(st.order) < cfg.batch_size:
        st.order += torch.randperm(len(st.pairs), generator=st.gen).tolist()
    idx, st.order = st.order[:cfg.batch_size], st.order[cfg.batch_size:]
    return idx


def _step(cfg: DPOConfig, st: _State, it: int) -> dict:
    """Evaluate if due (before the update, like an RLHF rollout), then one DPO gradient step."""
    t0 = time.perf_counter()
    due = cfg.eval_every > 0 and (it == 1 or it == cfg.steps or it % cfg.eval_every == 0)
    record = {"iteration": it, "episodes": it * cfg.batch_size, "objective/beta": cfg.beta}
    record.update(_evaluate(cfg, st) if due else _NO_EVAL)
    t_eval = time.perf_counter()
    idx = _next_batch(cfg, st)
    pad = st.tokenizer.pad_token_id
    st.policy.train(False)
    lc, lr = pair_logprobs(st.policy, st.pairs, idx, pad, st.device)          # (b,) each
    with torch.no_grad():
        rc, rr = pair_logprobs(st.ref_model, st.pairs, idx, pad, st.device)
    loss, stats = dpo_loss(lc, lr, rc, rr, cfg.beta)
    check_finite(loss, "the DPO loss")
    st.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(st.policy.parameters(), cfg.max_grad_norm)
    check_finite(grad_norm, "the gradient norm")
    st.optimizer.step()
    t_step = time.perf_counter()
    record.update({
        "losses/policy_loss": stats["loss"], "losses/grad_norm": float(grad_norm),
        "rewards/chosen": stats["reward_chosen"], "rewards/rejected": stats["reward_rejected"],
        "rewards/margins": stats["reward_margin"], "rewards/accuracies": stats["reward_accuracy"],
        "perf/eval_s": t_eval - t0, "perf/update_s": t_step - t_eval,
        "perf/iteration_s": t_step - t0})
    return record


_NO_EVAL = {"objective/kl": None, "objective/kl_per_token": None, "objective/gold_reward": None,
            "objective/proxy_reward": None, "losses/entropy": None,
            "charts/response_length": None, "samples": []}


@torch.no_grad()
def _evaluate(cfg: DPOConfig, st: _State) -> dict:
    """Fresh samples from π_θ on `eval_size` prompts of the pool: gold (and proxy), the KL to
    π_ref (batch mean of Σ_t k1_t), the policy's entropy per token, the response length. Its
    random numbers are its own (`eval_gen`, a forked RNG), so evaluating does not change the
    training run."""
    n = min(cfg.eval_size, len(st.prompts))
    idx = torch.randperm(len(st.prompts), generator=st.eval_gen)[:n].tolist()
    with _fork_rng(int(torch.randint(2**31 - 1, (1,), generator=st.eval_gen)), st.device):
        ro = sample_responses(st.policy, st.tokenizer, [st.prompts[i] for i in idx],
                              cfg.response_len)
    pol = sequence_logprobs(st.policy, ro.input_ids, ro.attention_mask, ro.n_prompt,
                            with_entropy=True)
    ref = sequence_logprobs(st.ref_model, ro.input_ids, ro.attention_mask, ro.n_prompt)
    k1 = torch.where(ro.mask, pol["logp"] - ref["logp"], torch.zeros_like(pol["logp"]))
    texts = ro.texts
    gold = torch.as_tensor(st.gold_fn(texts), dtype=torch.float32)
    proxy = (torch.as_tensor(st.reward_fn(texts), dtype=torch.float32)
             if st.reward_fn is not None else None)
    for name, t in (("gold_fn", gold), ("reward_fn", proxy)):
        if t is not None and not bool(torch.isfinite(t).all()):
            raise TrainingDiverged(f"{name} returned non-finite scores")
    return {"objective/kl": float(k1.sum(dim=1).mean()),
            "objective/kl_per_token": float(masked_mean(k1, ro.mask)),
            "objective/gold_reward": float(gold.mean()),
            "objective/proxy_reward": None if proxy is None else float(proxy.mean()),
            "losses/entropy": float(masked_mean(pol["entropy"], ro.mask)),
            "charts/response_length": float(ro.mask.sum()) / n,
            "samples": [{"prompt": ro.prompts[i], "response": ro.responses[i],
                         "gold": float(gold[i])} for i in range(min(cfg.n_samples, n))]}


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def build_parser():
    """The `python -m ppo_core dpo` parser: one flag per `DPOConfig` field."""
    return build_parser_for(
        DPOConfig, prog="python -m ppo_core dpo",
        description="Direct Preference Optimisation: sample pairs of responses from the "
                    "reference policy, let the simulated annotator choose, and train the policy "
                    "on the pairs with the DPO loss (no reward model, no RL loop). Logs one JSON "
                    "line per step; gold and KL on fresh samples every --eval-every steps.")


def cli_main(argv=None) -> int:
    """`python -m ppo_core dpo ...`. Exit status: 0 done, 1 diverged, 2 a usage error, 130
    interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)

    def show(r):
        evald = r["objective/gold_reward"] is not None
        print(f"step {r['iteration']:4d}  loss {r['losses/policy_loss']:.3f}  "
              f"acc {r['rewards/accuracies']:.2f}  margin {r['rewards/margins']:+.3f}"
              + (f"  gold {r['objective/gold_reward']:+.3f}  kl {r['objective/kl']:.3f}"
                 if evald else ""), flush=True)

    try:
        cfg = config_from_args(DPOConfig, args)
        resolve_device(cfg.device, check=True)
        result = train(cfg, callback=show)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    if result.interrupted:
        print("interrupted: the log so far is kept")
    if cfg.save_dir and not result.interrupted:
        print(f"saved {cfg.save_dir}")
    return 130 if result.interrupted else 0

"""Token-level PPO for RLHF: rollouts, the KL-shaped reward, the trainer (chapter 05).

One iteration, in CleanRL's order (Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al.
2022):

1. Roll out: sample B responses of at most T tokens for B left-padded prompts with the
   policy π_θ (KV-cache `generate`); keep each response up to and including its first EOS.
2. Score, without gradients: log π_old(y_t|x, y_<t) and V(s_t) with the policy and its
   value head, log π_ref(y_t|x, y_<t) with the frozen reference, the reward model's score
   R(x, y) of the whole response, and the gold score (which PPO never sees).
3. Per-token reward, for response tokens t = 0..T_b−1 of sequence b:

       r_t = −β · k1_t  +  [t = T_b − 1] · R(x, y),       k1_t = log π_old(y_t|·) − log π_ref(y_t|·)

4. GAE over tokens (γ = 1, λ = 0.95), the episode ending at the last response token;
   advantages whitened over the response mask.
5. Epochs × minibatches of `ppo_core.losses.ppo_objective`: the clipped surrogate plus the
   clipped value loss (the KL is already in the reward, so the objective's β is 0 here).
6. Adapt β (fixed, or the proportional controller of `ppo_core.kl_control`), log.

Chapter 07's options change steps 1, 3–5 and nothing else: `group_size` G samples each prompt
G times; `advantage="grpo"`, `"dr_grpo"` or `"rloo"` replaces GAE with a group baseline on the
sequence return (no value head, no critic pass: `_group_advantages`); `kl_in="loss"` moves the
β·KL term from the reward into the loss (k3 as GRPO, or k2); `clip_eps_high` makes the clip
asymmetric (DAPO); `loss_agg` chooses how per-token losses are averaged; `ptx_coef` adds
InstructGPT's pre-training term γ·E_corpus[log π(x)] (`ppo_core.trainers.ptx`).

Alignment, spelled out: for a sequence `ids = [prompt (P tokens, left-padded) | response]`
the logits and the value at position P−1+t belong to the state before response token t and
score the token at position P+t, hence the slices `logits[:, P-1:-1]`, `values[:, P-1:-1]`
against `ids[:, P:]`.

Shapes: B batch (episodes = prompts), P prompt tokens, T response tokens, V vocabulary.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .._checks import finite_tensor, non_negative, positive_finite, unit_interval
from .._runtime import resolve_device, torch_threads
from ..advantages import explained_variance, gae, group_advantages, rloo_advantages
from ..kl_control import make_kl_controller
from ..losses import LOSS_AGGS, kl_estimate, ppo_objective
from ..masking import logprobs_from_logits, masked_mean, masked_whiten
from ..value_head import CausalLMWithValueHead, float32_head, lm_forward, position_ids_from_mask
from . import distributed
from .distributed import World
from .config import MAX_CLIP_EPS, TrainerConfig, arg, build_parser, check_clip_eps, run_cli  # noqa: F401
from .run import MinibatchStats, Run, TrainingDiverged, check_finite, check_output_paths, losses_record

__all__ = ["RLHFConfig", "RLHFResult", "TokenRollout", "train", "load_policy_and_tokenizer",
           "sample_responses", "response_mask", "sequence_logprobs", "score_rollout",
           "token_rewards", "per_token_kl", "evaluate_gold", "save_policy", "sync", "cli_parser",
           "cli_main"]


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

@dataclass
class RLHFConfig(TrainerConfig):
    """Every setting of an RLHF run. Defaults suit the tiny GPT-2 on two CPU cores."""

    model: str = arg("tiny", "policy to start from: tiny (course GPT-2), gpt2 (124M; offline: its "
                     "architecture pre-trained on the course corpus, built once) or a local "
                     "save_pretrained folder")
    reward_bias: str | None = arg(None, "reward model to optimise: none (unbiased annotators) or "
                                  "exclamation (annotators who like '!': a proxy the policy can "
                                  "hack)", choices=(None, "exclamation"))
    steps: int = arg(20, "PPO iterations (each: one batch of rollouts, then the update epochs)")
    batch_size: int = arg(32, "B: episodes per iteration and per process (B/G distinct prompts, "
                          "each sampled G times; N processes: N·B episodes an iteration)")
    group_size: int = arg(1, "G: samples per prompt, contiguous in the batch (must divide "
                          "batch_size; grpo, dr_grpo and rloo need G >= 2)")
    advantage: str = arg("gae", "advantage estimator: gae (the value head's GAE over tokens, "
                         "PPO), grpo ((R - mean)/std within each prompt's group; Shao et al. "
                         "2024), dr_grpo (R - mean; Liu et al. 2025) or rloo (R minus the mean of "
                         "the other G-1; Ahmadian et al. 2024). The group ones train no critic",
                         choices=("gae", "grpo", "dr_grpo", "rloo"))
    response_len: int = arg(16, "T: maximum number of generated tokens per response")
    min_response_len: int = arg(0, "EOS is forbidden before this many tokens (benchmarks use T "
                                "for fixed-length responses; the samples then come from π with "
                                "EOS masked out, a small off-policy bias)")
    update_epochs: int = arg(2, "K: passes over each batch of rollouts", flag="--epochs")
    minibatch_size: int = arg(16, "episodes per gradient step and per process (must divide "
                              "batch_size)")
    lr: float = arg(3e-4, "Adam learning rate for the policy and the value head (3e-4 suits the "
                   "course's tiny GPT-2; for GPT-2 124M take about 1e-5, as lm-human-preferences' "
                   "1.41e-5)")
    clip_eps: float = arg(0.2, "ε: clip range of the probability ratio r_t(θ), usually 0.1 to 0.3")
    clip_eps_high: float | None = arg(None, "ε_high: upper clip 1+ε_high, DAPO's clip-higher "
                                      "(0.28 in Yu et al. 2025; none: ε)")
    loss_agg: str = arg("token-mean", "how per-token losses are averaged: token-mean (DAPO; "
                        "PPO here), seq-mean-token-mean (GRPO's original), "
                        "seq-mean-token-sum-norm (Dr. GRPO: divided by response_len)",
                        choices=LOSS_AGGS)
    value_clip_eps: float | None = arg(0.2, "ε_v: clip range of the value update around the old "
                                       "values (none or 0: unclipped)", zero_is_none=True)
    vf_coef: float = arg(0.1, "c_v: weight of the value loss")
    ent_coef: float = arg(0.0, "c_H: entropy bonus (RLHF usually relies on the KL penalty instead)")
    ptx_coef: float = arg(0.0, "γ: weight of the pre-training term γ·E_corpus[log π(x)] "
                          "(InstructGPT's PPO-ptx, Ouyang et al. 2022 eq. 2), one corpus batch of "
                          "minibatch_size sentences per gradient step (0: off)")
    beta: float = arg(0.05, "β: KL coefficient, in the per-token reward or in the loss (kl_in; "
                      "initial value when adaptive)")
    kl_target: float | None = arg(None, "adaptive β: KL target in nats per *sequence* (none: β "
                                  "stays fixed)")
    kl_horizon: float = arg(10_000, "adaptive β: the controller's horizon in episodes "
                            "(Ziegler et al. 2019)")
    kl_estimator: str = arg("k1", "per-token KL estimate: in the reward only k1 (the log-ratio, "
                            "the one whose score-function gradient is ∇KL(π‖π_ref)); in the "
                            "loss (kl_in=loss) k2 (gradient ∇KL(π‖π_ref)) or k3 (GRPO's; its "
                            "gradient is the reverse KL's)", choices=("k1", "k2", "k3"))
    kl_in: str = arg("reward", "where β·KL goes: reward (r_t = −β·k_t, PPO-RLHF) or loss (+β·mean "
                     "k_t, GRPO)", choices=("reward", "loss"))
    missing_eos_penalty: float | None = arg(None, "subtract this from R of every response cut at "
                                            "response_len without an EOS (TRL's "
                                            "missing_eos_penalty; none: no penalty)")
    gamma: float = arg(1.0, "γ: discount over tokens (gae only)")
    gae_lambda: float = arg(0.95, "λ: GAE parameter over tokens")
    whiten_advantages: bool = arg(True, "standardise GAE advantages over the response tokens of "
                                  "each batch (gae only: the group baselines are their own "
                                  "normalisation)")
    temperature: float = arg(1.0, "sampling temperature; the policy trained is "
                             "softmax(logits / temperature)")
    max_grad_norm: float = arg(1.0, "gradient-norm clip per step")
    adam_eps: float = arg(1e-5, "Adam's ε (1e-5 as in lm-human-preferences, TRL and CleanRL, "
                          "not PyTorch's 1e-8)")
    anneal_lr: bool = arg(False, "decay the learning rate linearly to 0 over the steps")
    target_kl: float | None = arg(None, "stop an iteration's epochs after one whose mean k3 "
                                  "estimate of KL(π_old‖π_θ) per token exceeds this (none: never)")
    n_prompts: int = arg(256, "size of the prompt pool that batches are drawn from")
    prompt_seed: int = arg(1, "seed of `ppo_core.lm.text.build_prompts`")
    seed: int = arg(0, "seed of sampling, minibatch order and the value head (rank r of several "
                    "processes samples with seed + r)")
    device: str | None = arg(None, "cpu, cuda, ... (none: CUDA when available)")
    bf16: bool | None = arg(None, "bf16 autocast (auto: on CUDA only)")
    threads: int | None = arg(None, "torch CPU threads while training (none: torch's choice; 1 is "
                              "fastest for the tiny model on a busy 2-core machine)")
    log_path: str | None = arg(None, "JSONL metrics log (none: keep records in memory only)",
                               flag="--log")
    save_dir: str | None = arg(None, "checkpoint folder: policy, value head, tokenizer "
                               "(safetensors; none: no checkpoint)", flag="--save")
    save_every: int = arg(0, "also checkpoint every this many iterations (0: only at the end / "
                          "on interrupt)")
    tensorboard_dir: str | None = arg(None, "also write the log's numbers as TensorBoard scalars "
                                      "here (step = iteration; none: no TensorBoard)",
                                      flag="--tensorboard")
    resume: bool = arg(False, "continue the run checkpointed in save_dir: its policy, value head, "
                       "optimizer, β and iteration count, appending to the log")
    overwrite: bool = arg(False, "replace an existing log and checkpoint instead of refusing")
    n_samples: int = arg(3, "sample texts written to each log record")
    progress: bool = arg(True, "show a tqdm progress bar")
    dist_timeout: float = arg(300.0, "several processes: seconds a rank waits for the others (at "
                              "start-up and in every collective) before the job fails")

    def validate(self) -> None:
        for name in ("steps", "batch_size", "response_len", "update_epochs", "minibatch_size",
                     "n_prompts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.min_response_len, int) or not 0 <= self.min_response_len <= self.response_len:
            raise ValueError(f"min_response_len must be an int in [0, response_len="
                             f"{self.response_len}], got {self.min_response_len!r}")
        if self.batch_size % self.minibatch_size:
            raise ValueError(f"minibatch_size={self.minibatch_size} must divide "
                             f"batch_size={self.batch_size}")
        self._validate_objective()
        positive_finite(self.lr, "lr")
        positive_finite(self.clip_eps, "clip_eps")
        check_clip_eps(self.clip_eps)
        positive_finite(self.value_clip_eps, "value_clip_eps", allow_none=True)
        non_negative(self.vf_coef, "vf_coef")
        non_negative(self.ent_coef, "ent_coef")
        non_negative(self.beta, "beta")
        positive_finite(self.kl_target, "kl_target", allow_none=True)
        positive_finite(self.kl_horizon, "kl_horizon")
        if self.kl_target is not None and self.beta <= 0:
            raise ValueError(f"adaptive β (kl_target={self.kl_target}) needs beta > 0, got "
                             f"{self.beta!r}")
        if self.kl_in == "reward" and self.kl_estimator != "k1":
            raise ValueError(KL_IN_REWARD_ERROR.format(kind=self.kl_estimator))
        positive_finite(self.missing_eos_penalty, "missing_eos_penalty", allow_none=True)
        positive_finite(self.adam_eps, "adam_eps")
        unit_interval(self.gamma, "gamma")
        unit_interval(self.gae_lambda, "gae_lambda")
        positive_finite(self.temperature, "temperature")
        positive_finite(self.max_grad_norm, "max_grad_norm")
        positive_finite(self.target_kl, "target_kl", allow_none=True)
        from ..lm.reward import BIASES

        if self.reward_bias not in BIASES:
            raise ValueError(f"reward_bias must be one of {BIASES}, got {self.reward_bias!r}")
        for name in ("save_every", "n_samples"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an int >= 0, got {getattr(self, name)!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be an int >= 1 or None, got {self.threads!r}")
        if self.resume and not self.save_dir:
            raise ValueError("resume=True needs save_dir (where the checkpoint is)")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")
        positive_finite(self.dist_timeout, "dist_timeout")

    def _validate_objective(self) -> None:
        """The chapter-07 options: group sampling, advantage, KL placement, clip, ptx."""
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) \
                or self.group_size < 1 or self.batch_size % self.group_size:
            raise ValueError(f"group_size must be a positive int that divides batch_size="
                             f"{self.batch_size}, got {self.group_size!r}")
        if self.advantage not in ("gae", "grpo", "dr_grpo", "rloo"):
            raise ValueError(f"advantage must be 'gae', 'grpo', 'dr_grpo' or 'rloo', got "
                             f"{self.advantage!r}")
        if self.advantage != "gae" and self.group_size < 2:
            raise ValueError(f"advantage={self.advantage!r} needs group_size >= 2 (the baseline is "
                             f"the other samples of the same prompt), got {self.group_size}")
        if self.kl_in not in ("reward", "loss"):
            raise ValueError(f"kl_in must be 'reward' or 'loss', got {self.kl_in!r}")
        if self.kl_in == "loss" and self.kl_estimator == "k1":
            raise ValueError("kl_in='loss' needs kl_estimator 'k2' (gradient ∇KL(π‖π_ref)) or 'k3' "
                             "(GRPO's): k1 in the loss has zero expected gradient (chapter 02)")
        positive_finite(self.clip_eps_high, "clip_eps_high", allow_none=True)
        if self.loss_agg not in LOSS_AGGS:
            raise ValueError(f"loss_agg must be one of {LOSS_AGGS}, got {self.loss_agg!r}")
        non_negative(self.ptx_coef, "ptx_coef")

    @property
    def uses_critic(self) -> bool:
        """Whether the value head is trained and run (GAE), or a group baseline replaces it."""
        return self.advantage == "gae"

    def uses_bf16(self, device) -> bool:
        """Whether bf16 autocast is on for `device`: `bf16` if set, else on CUDA only."""
        return self.bf16 if self.bf16 is not None else resolve_device(device).type == "cuda"

    @property
    def n_minibatches(self) -> int:
        """Gradient steps per epoch."""
        return self.batch_size // self.minibatch_size


KL_IN_REWARD_ERROR = (
    "kl_estimator={kind!r} in the reward: the per-token reward −β·k_t is optimised by the "
    "score function, whose expected gradient E[k·∇log π] is ∇KL(π‖π_ref) only for k = k1; "
    "k2 and k3 there give biased gradients (k3: ∇KL(π‖π_ref) − ∇KL(π_ref‖π)). Use k1 in the "
    "reward; k2 (or k3, the reverse direction) belong in the loss (ppo_objective's kl_kind).")

@dataclass
class RLHFResult:
    """What `train` returns: the records it logged and the models it trained."""

    records: list[dict]
    policy: CausalLMWithValueHead
    ref_model: torch.nn.Module
    tokenizer: object
    config: RLHFConfig
    interrupted: bool = False
    checkpoint: Path | None = None
    stop_signal: int | None = None
    rank: int = 0
    world_size: int = 1


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

def load_policy_and_tokenizer(model: str = "tiny", device=None, what: str = "model (--model)"):
    """(causal LM, tokenizer) for `model` = "tiny", "gpt2" or a local path.

    "gpt2" loads the hub's `gpt2` with `from_pretrained` where a hub is reachable (or the
    Hugging Face cache has it). Where neither is, it loads GPT-2 small's architecture
    pre-trained on the course corpus (`models.gpt2_small_path()`, built once: about 25 minutes
    on the CPU, far less on a GPU), with the course tokenizer.

    A path that is not a loadable `save_pretrained` folder (a file, an empty folder, a broken
    config.json, truncated weights) raises one ValueError naming `what` (the argument), the
    path and what is wrong with it.
    """
    from ..lm import models

    dev = resolve_device(device)
    if not isinstance(model, (str, os.PathLike)) or not str(model):
        raise ValueError(f"{what} must be 'tiny', 'gpt2' or a path, got {model!r}")
    name = str(model)
    if name == "gpt2":
        try:
            return models.load_policy("gpt2", device=dev)
        except (OSError, ValueError):                    # no hub, nothing in the HF cache
            return models.load_policy(models.gpt2_small_path(), device=dev)
    if name != "tiny":
        from ..lm.cache import recover_interrupted_swap

        recover_interrupted_swap(name)               # a checkpoint whose save was killed
    if name != "tiny" and not Path(name).exists():
        raise ValueError(f"{what} must be 'tiny', 'gpt2' or an existing path, got {name!r}")
    if name == "tiny":
        return models.load_policy(name, device=dev)
    try:
        return models.load_policy(name, device=dev)
    except ValueError as e:
        raise ValueError(f"{what} {name!r} {e}") from None


def _reference_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of the initial policy: π_ref."""
    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


CHECKPOINT_META = "rlhf_config.json"
"""The file that marks a folder as an RLHF checkpoint (run config and counters)."""
OPTIMIZER_FILE = "optimizer.safetensors"


def checkpoint_files(directory) -> set[str]:
    """The files of an RLHF checkpoint in `directory`, as its manifest lists them (empty if
    the folder holds none)."""
    from ..lm.cache import manifest_files

    return manifest_files(directory, CHECKPOINT_META)


def save_policy(policy: CausalLMWithValueHead, tokenizer, path, config: RLHFConfig | None = None,
                state: dict | None = None, optimizer=None, generator=None) -> Path:
    """Checkpoint: `save_pretrained` (safetensors) + value head + tokenizer + run config, and,
    for `resume`, the optimizer's moments and the sampling RNG (safetensors, no pickle).

    Written into a temporary folder and swapped into place (`lm.cache.atomic_build`), so an
    interrupted save leaves the previous checkpoint or the new one, never a mix or nothing."""
    from safetensors.torch import save_file

    from ..lm.cache import atomic_build
    from .checkpoint import optimizer_tensors

    meta = {"config": config.to_dict() if config is not None else {}, "state": state or {}}

    def write(tmp: Path) -> None:
        policy.save_pretrained(tmp)
        tokenizer.save_pretrained(str(tmp))
        tensors = optimizer_tensors(optimizer) if optimizer is not None else {}
        if generator is not None:
            tensors["rng.torch"] = generator.get_state()
            tensors["rng.global"] = torch.get_rng_state()
        if tensors:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                      str(tmp / OPTIMIZER_FILE))
        (tmp / CHECKPOINT_META).write_text(json.dumps(meta, indent=1), encoding="utf-8")

    return atomic_build(Path(path), write, {"kind": "rlhf checkpoint"},
                        replace_only=CHECKPOINT_META)


# --------------------------------------------------------------------------------------------
# Rollouts
# --------------------------------------------------------------------------------------------

@dataclass
class TokenRollout:
    """One batch of episodes. P prompt tokens (left-padded), T response tokens.

    input_ids `(B, P+T)`, attention_mask `(B, P+T)` (0 on left padding and after the first
    EOS), mask `(B, T)` bool response mask, n_prompt P; the rest are filled by `score_rollout`.
    """

    prompts: list[str]
    responses: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mask: torch.Tensor
    n_prompt: int
    sampling_logprobs: torch.Tensor | None = None
    logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    values: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    gold: torch.Tensor | None = None

    @property
    def response_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.n_prompt:]

    @property
    def texts(self) -> list[str]:
        return [p + r for p, r in zip(self.prompts, self.responses)]


def response_mask(response_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Which response tokens are part of the episode: everything up to and including the
    first EOS; nothing after it (with pad = EOS, the padding *is* more EOS tokens).

        mask[b, t] = 1  iff  no EOS among response_ids[b, :t]

    Args: response_ids `(B, T)`; eos_token_id the EOS id.
    Returns: `(B, T)` bool. Every row keeps at least its first token.
    """
    if not isinstance(response_ids, torch.Tensor) or response_ids.dim() != 2:
        raise ValueError(f"response_ids must be a (B, T) tensor, got shape "
                         f"{tuple(getattr(response_ids, 'shape', ()))}")
    if not isinstance(eos_token_id, int):
        raise ValueError(f"eos_token_id must be an int, got {eos_token_id!r}")
    is_eos = (response_ids == eos_token_id).long()                      # (B, T)
    eos_before = is_eos.cumsum(dim=1) - is_eos                          # EOS strictly before t
    return eos_before == 0


def _autocast(device: torch.device, bf16: bool):
    if bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def sync(device: torch.device) -> None:
    """Wait for the GPU's queue, so that the perf/* clocks time the work, not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def sample_responses(model, tokenizer, prompts: list[str], max_new_tokens: int = 16,
                     temperature: float = 1.0, bf16: bool = False,
                     return_sampling_logprobs: bool = False, min_new_tokens: int = 0) -> TokenRollout:
    """Sample one response per prompt with KV-cache `generate` on a left-padded batch.

    Pure sampling from softmax(logits / temperature): no top-k, no top-p, no repetition
    penalty, so the log-probabilities recomputed later are those of the sampling policy.
    `generate` derives position ids from the attention mask, as `sequence_logprobs` does.
    Under bf16 the LM head runs in float32 (`value_head.float32_head`) here as in the
    re-scoring, so that the policy sampled is the policy PPO scores.

    Args:
        model: a causal LM or `CausalLMWithValueHead`.
        tokenizer: its tokenizer (padding_side "left").
        prompts: B prompt strings.
        max_new_tokens: T.
        return_sampling_logprobs: also keep log π(y_t) as seen during generation `(B, T)`
            (for the test that recomputed log-probs equal them).
        min_new_tokens: forbid EOS before this many tokens (0: pure sampling).

    Returns: a `TokenRollout` with ids, masks and decoded responses (up to the first EOS).
    """
    from transformers import GenerationConfig

    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a non-empty list of strings, got {type(prompts).__name__}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    positive_finite(temperature, "temperature")
    if tokenizer.padding_side != "left":
        raise ValueError(f"tokenizer.padding_side must be 'left' for generation, got "
                         f"{tokenizer.padding_side!r}")
    lm = model.pretrained_model if isinstance(model, CausalLMWithValueHead) else model
    device = _model_device(lm)
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True)
    prompt_ids = enc["input_ids"].to(device)                            # (B, P)
    prompt_mask = enc["attention_mask"].to(device)                      # (B, P)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    gen_cfg = GenerationConfig(do_sample=True, top_k=0, top_p=1.0, temperature=float(temperature),
                               max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                               pad_token_id=pad, eos_token_id=eos, use_cache=True,
                               repetition_penalty=1.0, return_dict_in_generate=True,
                               output_logits=return_sampling_logprobs)
    was_training = lm.training
    lm.eval()
    with _autocast(device, bf16), float32_head(lm) if bf16 else contextlib.nullcontext():
        out = lm.generate(input_ids=prompt_ids, attention_mask=prompt_mask,
                          generation_config=gen_cfg)
    lm.train(was_training)
    P = prompt_ids.shape[1]
    response = out.sequences[:, P:]                                     # (B, T' ≤ T)
    mask = response_mask(response, eos)                                 # (B, T')
    response = torch.where(mask, response, torch.full_like(response, pad))
    input_ids = torch.cat([prompt_ids, response], dim=1)                # (B, P+T')
    attention_mask = torch.cat([prompt_mask, mask.long()], dim=1)       # (B, P+T')
    texts = [tokenizer.decode(r[m], skip_special_tokens=True)
             for r, m in zip(response.cpu(), mask.cpu())]
    rollout = TokenRollout(list(prompts), texts, input_ids, attention_mask, mask, P)
    if return_sampling_logprobs:
        logits = torch.stack(out.logits, dim=1).float() / float(temperature)   # (B, T', V)
        rollout.sampling_logprobs = logprobs_from_logits(logits, response)
    return rollout


def _unwrap(model):
    """The module inside a `DistributedDataParallel` wrapper (else `model`)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      n_prompt: int, temperature: float = 1.0, bf16: bool = False,
                      with_values: bool = False, with_entropy: bool = False, shift: int = 1):
    """Log-probabilities of the response tokens, re-scored in one forward pass.

        logp[b, t] = log softmax(logits[b, P−1+t] / temperature)[ids[b, P+t]]

    The logits at position P−1+t score the token at P+t (the off-by-one of causal LMs);
    position ids come from the attention mask, so left padding changes nothing.

    Args:
        model: a causal LM, or a `CausalLMWithValueHead` when `with_values` (also inside
            `DistributedDataParallel`, whose backward then averages the gradients).
        input_ids, attention_mask: `(B, P+T)`.
        n_prompt: P.
        shift: the causal shift, 1 (correct). 0 reproduces the off-by-one bug that chapter
            06 diagnoses: position P+t then scores the token it has already read.

    Returns: dict with `logp` `(B, T)` (float32), and `values` `(B, T)` (V(s_t), the state
    before token t) and `entropy` `(B, T)` when asked for.
    """
    if not isinstance(n_prompt, int) or not 1 <= n_prompt < input_ids.shape[1]:
        raise ValueError(f"n_prompt must be an int in [1, {input_ids.shape[1] - 1}], got {n_prompt!r}")
    if shift not in (0, 1):
        raise ValueError(f"shift must be 1 (or 0, the off-by-one bug), got {shift!r}")
    device = input_ids.device
    position_ids = position_ids_from_mask(attention_mask)
    with _autocast(device, bf16):                 # the LM head in float32 (see lm_forward)
        if isinstance(_unwrap(model), CausalLMWithValueHead):
            logits, values = model(input_ids, attention_mask, position_ids,
                                   return_values=with_values, fp32_head=bf16)
        else:
            if with_values:
                raise ValueError("with_values=True needs a CausalLMWithValueHead")
            logits, _ = lm_forward(model, input_ids, attention_mask, position_ids,
                                   fp32_head=bf16)
            values = None
    L = input_ids.shape[1]
    logits = logits[:, n_prompt - shift:L - shift].float() / temperature  # position t scores t+1
    tokens = input_ids[:, n_prompt:]                                     # (B, T)
    out = {}
    if with_entropy:                                  # one log-softmax for both
        out["logp"], out["entropy"] = logprobs_from_logits(logits, tokens, with_entropy=True)
    else:
        out["logp"] = logprobs_from_logits(logits, tokens)
    if with_values:
        out["values"] = values[:, n_prompt - shift:L - shift]             # V(s_t), (B, T)
    return out


@torch.no_grad()
def score_rollout(rollout: TokenRollout, policy: CausalLMWithValueHead, ref_model,
                  reward_fn: Callable, gold_fn: Callable | None = None,
                  temperature: float = 1.0, bf16: bool = False,
                  with_values: bool = True) -> TokenRollout:
    """Fill in log π_old, V_old, log π_ref, the reward-model score and the gold score.

    Both reward functions take the B full texts (prompt + response) and return `(B,)`.
    `with_values=False` (no critic: GRPO, RLOO) leaves `values` None.
    """
    pol = sequence_logprobs(policy, rollout.input_ids, rollout.attention_mask, rollout.n_prompt,
                            temperature, bf16, with_values=with_values)
    ref = sequence_logprobs(ref_model, rollout.input_ids, rollout.attention_mask,
                            rollout.n_prompt, temperature, bf16)
    rollout.logprobs, rollout.values, rollout.ref_logprobs = pol["logp"], pol.get("values"), ref["logp"]
    device = rollout.input_ids.device
    texts = rollout.texts
    rollout.scores = torch.as_tensor(reward_fn(texts), dtype=torch.float32).to(device).reshape(-1)
    if rollout.scores.shape[0] != len(texts):
        raise ValueError(f"reward_fn must return one score per text ({len(texts)}), got "
                         f"shape {tuple(rollout.scores.shape)}")
    if gold_fn is not None:
        rollout.gold = torch.as_tensor(gold_fn(texts), dtype=torch.float32).to(device).reshape(-1)
        if rollout.gold.shape[0] != len(texts):
            raise ValueError(f"gold_fn must return one score per text ({len(texts)}), got "
                             f"shape {tuple(rollout.gold.shape)}")
    return rollout


def token_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                  mask: torch.Tensor, beta: float, kl_estimator: str = "k1"):
    """The KL-shaped per-token reward of RLHF.

        r_t = −β · k_t  +  [t = T_b − 1] · R(x, y)       for response tokens (mask = 1)
        r_t = 0                                           after the episode (mask = 0)

    with k_t the per-token KL estimate (k1_t = log π_old(y_t) − log π_ref(y_t)) and T_b the
    length of response b.

    Args: scores `(B,)` reward-model scores R; logprobs, ref_logprobs, mask `(B, T)`; β ≥ 0.
    Returns: (rewards `(B, T)`, kl `(B, T)` per-token estimate (0 off the mask),
    dones `(B, T)` with 1 at each response's last token).
    """
    beta = non_negative(beta, "beta")
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise ValueError(f"mask must be a (B, T) tensor, got shape {tuple(getattr(mask, 'shape', ()))}")
    if tuple(logprobs.shape) != tuple(mask.shape):
        raise ValueError(f"logprobs must have the mask's shape {tuple(mask.shape)}, "
                         f"got {tuple(logprobs.shape)}")
    scores = finite_tensor(torch.as_tensor(scores, dtype=torch.float32), "scores")
    if tuple(scores.shape) != (mask.shape[0],):
        raise ValueError(f"scores must have shape ({mask.shape[0]},), one per response, "
                         f"got {tuple(scores.shape)}")
    mask = mask.bool()
    if kl_estimator != "k1":
        raise ValueError(KL_IN_REWARD_ERROR.format(kind=kl_estimator))
    kl = kl_estimate(logprobs, ref_logprobs, kl_estimator)               # (B, T)
    kl = torch.where(mask, kl, torch.zeros_like(kl))
    last = mask.long().sum(dim=1) - 1                                    # T_b − 1, (B,)
    if bool((last < 0).any()):
        raise ValueError("mask has a response with no token")
    dones = torch.zeros_like(kl)
    dones[torch.arange(len(last), device=last.device), last] = 1.0
    rewards = -beta * kl + dones * scores.reshape(-1, 1).to(kl)
    return torch.where(mask, rewards, torch.zeros_like(rewards)), kl, dones


@torch.no_grad()
def per_token_kl(policy, ref_model, tokenizer, prompt: str, response) -> tuple[list[str], torch.Tensor]:
    """The per-token log-ratio log π(y_t) − log π_ref(y_t) along one response (the heatmap
    of chapter 05).

    Args:
        prompt: the prompt string.
        response: the response as token ids (a 1-D tensor or list: what was sampled, e.g.
            `rollout.response_ids[b][rollout.mask[b]]`, EOS included), or as a string,
            which is re-tokenized (a decoded response has lost its EOS token).

    Returns: (token strings, `(T,)` tensor of log-ratios on the CPU).
    """
    lm = policy.pretrained_model if isinstance(policy, CausalLMWithValueHead) else policy
    device = _model_device(lm)
    p_ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    if isinstance(response, str):
        r_ids = tokenizer(response, return_tensors="pt", add_special_tokens=False)["input_ids"]
    else:
        r_ids = torch.as_tensor(response, dtype=torch.long).cpu()
        if r_ids.dim() != 1:
            raise ValueError(f"response ids must be 1-D (one response), got shape "
                             f"{tuple(r_ids.shape)}")
        r_ids = r_ids[None]
    if r_ids.shape[1] == 0:
        raise ValueError("response must contain at least one token")
    ids = torch.cat([p_ids, r_ids], dim=1).to(device)
    attn = torch.ones_like(ids)
    P = p_ids.shape[1]
    a = sequence_logprobs(lm, ids, attn, P)["logp"][0]
    b = sequence_logprobs(ref_model, ids, attn, P)["logp"][0]
    tokens = [tokenizer.decode([t]) for t in r_ids[0].tolist()]
    return tokens, (a - b).cpu()


@torch.no_grad()
def evaluate_gold(model, tokenizer, prompts: list[str], gold_fn: Callable, reward_fn: Callable | None = None,
             max_new_tokens: int = 16, seed: int = 123, temperature: float = 1.0) -> dict:
    """Sample one response per prompt (seeded) and score it: mean gold (and proxy) score.

    Returns dict with `gold`, `proxy` (or None), `texts`, `responses`.
    """
    lm = model.pretrained_model if isinstance(model, CausalLMWithValueHead) else model
    with _fork_rng(seed, _model_device(lm)):
        ro = sample_responses(lm, tokenizer, list(prompts), max_new_tokens, temperature)
    texts = ro.texts
    gold = torch.as_tensor(gold_fn(texts), dtype=torch.float32)
    proxy = torch.as_tensor(reward_fn(texts), dtype=torch.float32) if reward_fn is not None else None
    return {"gold": float(gold.mean()), "proxy": None if proxy is None else float(proxy.mean()),
            "texts": texts, "responses": ro.responses}


@contextlib.contextmanager
def _fork_rng(seed: int, device: torch.device):
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------

def _default_rewards(cfg: RLHFConfig, device):
    from ..lm import reward

    rm = reward.load_reward_model(bias=cfg.reward_bias, device=device)
    return rm.score, reward.gold_score


@dataclass
class _State:
    """What one iteration needs and the next one inherits (a checkpoint restores it)."""
    policy: CausalLMWithValueHead
    ref_model: torch.nn.Module
    tokenizer: object
    optimizer: torch.optim.Optimizer
    kl_ctl: object
    gen: torch.Generator
    reward_fn: Callable
    gold_fn: Callable
    prompts: list
    device: torch.device
    bf16: bool
    iteration: int = 0
    episodes: int = 0                  # over all ranks
    reference_source: str | None = None
    """what π_ref was loaded from ("tiny", "gpt2", a path; None: a model passed in), saved with
    each checkpoint so that `resume` rebuilds the same reference"""
    ptx: object = None            # `ptx.CorpusBatches` when ptx_coef > 0
    world: World = field(default_factory=World)
    train_model: torch.nn.Module | None = None   # the policy, in DDP on several ranks


def _models(cfg: RLHFConfig, policy, tokenizer, ref_model, device, saved: dict | None = None):
    """(policy with value head, frozen π_ref, tokenizer) on `device`. Resuming (`saved`: the
    checkpoint's counters): the policy and its value head come from `save_dir`, π_ref is
    rebuilt from the run's original model."""
    if cfg.resume:
        lm, tokenizer = load_policy_and_tokenizer(cfg.save_dir, device, what="checkpoint (--save)")
        source = saved.get("reference")
        if ref_model is None and source is None:
            raise ValueError(f"the run in {cfg.save_dir!r} started from a model passed in as "
                             f"`policy`; pass its reference as `ref_model` to resume it")
        if ref_model is None:
            ref_model, _ = load_policy_and_tokenizer(source, device,
                                                     what="the checkpoint's original model")
    elif policy is None:
        lm, tokenizer = load_policy_and_tokenizer(cfg.model, device)
    else:
        if tokenizer is None:
            raise ValueError("tokenizer is required when a policy is passed")
        lm = policy.pretrained_model if isinstance(policy, CausalLMWithValueHead) else policy
        lm.to(device)
        from ..lm.text import prepare_tokenizer

        tokenizer = prepare_tokenizer(tokenizer)
    ref_model = _reference_copy(lm) if ref_model is None else ref_model
    ref_model.to(device)
    ref_model.eval()              # π_ref: no dropout; it is only ever run under no_grad and
                                  # never given to the optimiser (its requires_grad is left
                                  # alone: the caller's model may be copied into a policy)
    if not isinstance(policy, CausalLMWithValueHead):
        policy = CausalLMWithValueHead(lm)
        # starting from a checkpoint: its value head comes along; π_ref is the checkpoint's
        # policy (a new run from that policy, like SFT → RLHF), not the original model
        source = cfg.save_dir if cfg.resume else cfg.model
        if str(source) not in ("tiny", "gpt2"):
            policy.load_value_head(source)
    policy.to(device)
    policy.eval()                 # dropout off: the ratio must be exactly 1 before a step
    if not any(p.requires_grad for p in policy.pretrained_model.parameters()):
        raise ValueError("the policy has no trainable parameter (requires_grad is False "
                         "everywhere): was it copied from a frozen model?")
    return policy, ref_model, tokenizer


def _saved(save_dir) -> dict:
    """The run config and counters of the RLHF checkpoint in `save_dir`."""
    meta = Path(save_dir) / CHECKPOINT_META
    if not meta.is_file():
        raise ValueError(f"no RLHF checkpoint to resume in {str(save_dir)!r} (no {CHECKPOINT_META})")
    try:
        return json.loads(meta.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{meta} is not valid JSON: {e}") from None


def _setup(cfg, policy, tokenizer, ref_model, reward_fn, gold_fn, prompts,
           world: World | None = None) -> _State:
    """Models, rewards, prompts, optimiser, β controller and the shared generator (same seed
    on every rank: prompt draws and minibatch order); torch's global RNG, which `generate`
    samples with, is seeded with seed + rank. Several ranks: the policy goes into DDP, which
    gives every rank rank 0's weights (its value head included). world: this process's
    place among the ranks (None: one process, on `cfg.device`)."""
    world = world if world is not None else World(device=resolve_device(cfg.device))
    device = world.device
    torch.manual_seed(cfg.seed + world.rank)
    saved = _saved(cfg.save_dir)["state"] if cfg.resume else {}    # the checkpoint's counters
    source = None                                 # what π_ref comes from, for `resume`
    if ref_model is None and policy is None:
        source = saved.get("reference") if cfg.resume else cfg.model
    policy, ref_model, tokenizer = _models(cfg, policy, tokenizer, ref_model, device, saved)
    if reward_fn is None or gold_fn is None:
        default_rm, default_gold = _default_rewards(cfg, device)
        reward_fn, gold_fn = reward_fn or default_rm, gold_fn or default_gold
    if prompts is None:
        from ..lm import text

        prompts = text.build_prompts(n=cfg.n_prompts, seed=cfg.prompt_seed)
    if len(prompts) < 1:
        raise ValueError("prompts must not be empty")
    trainable = [p for p in policy.parameters() if p.requires_grad]
    st = _State(policy, ref_model, tokenizer,
                torch.optim.Adam(trainable, lr=cfg.lr, eps=cfg.adam_eps),
                make_kl_controller(cfg.beta, cfg.kl_target, cfg.kl_horizon),
                torch.Generator().manual_seed(cfg.seed), reward_fn, gold_fn, list(prompts),
                device, cfg.uses_bf16(device), reference_source=source, world=world)
    if cfg.ptx_coef > 0:
        from .ptx import CorpusBatches

        st.ptx = CorpusBatches(tokenizer, cfg.minibatch_size, seed=cfg.seed + world.rank)
    if cfg.resume:
        st.iteration, st.episodes = int(saved.get("iteration", 0)), int(saved.get("episodes", 0))
        st.kl_ctl.beta = float(saved.get("beta", st.kl_ctl.beta))
        opt = Path(cfg.save_dir) / OPTIMIZER_FILE
        if opt.is_file():
            from safetensors.torch import load_file

            from .checkpoint import load_optimizer_tensors

            tensors = load_file(str(opt))
            load_optimizer_tensors(st.optimizer, tensors)
            if "rng.torch" in tensors:
                st.gen.set_state(tensors["rng.torch"])
            if "rng.global" in tensors and world.size == 1:   # the stream `generate` samples from
                torch.set_rng_state(tensors["rng.global"])      # (rank 0's: several ranks reseed)
        if world.size > 1:
            torch.manual_seed(cfg.seed + world.rank + world.size * st.iteration)
    st.train_model = world.wrap(st.policy, unused_parameters=not cfg.uses_critic)
    return st


def train(config: RLHFConfig | None = None, *, policy=None, tokenizer=None, ref_model=None,
          reward_fn: Callable | None = None, gold_fn: Callable | None = None,
          prompts: list[str] | None = None, callback: Callable | None = None) -> RLHFResult:
    """RLHF with token-level PPO; one JSONL record per iteration (`_iteration`).

    Args:
        config: an `RLHFConfig` (defaults if None).
        policy: a causal LM or `CausalLMWithValueHead` to train (default: load `config.model`).
            A plain LM gets a fresh value head; it is trained in place.
        tokenizer: its tokenizer (required with `policy`).
        ref_model: frozen π_ref (default: a copy of the policy before training).
        reward_fn: texts → `(B,)` proxy reward R (default: the reward model for
            `config.reward_bias`); gold_fn: texts → `(B,)` gold score (default:
            `ppo_core.lm.reward.gold_score`).
        prompts: the prompt pool (default: `text.build_prompts(config.n_prompts)`).
        callback: called as `callback(record)` after each iteration (e.g. a live plot).

    Returns: `RLHFResult` (records, trained policy, reference, tokenizer, config).
    Output paths are checked before anything trains. On Ctrl-C or SIGTERM the log so far is
    kept, the last finished iteration is checkpointed (if `save_dir`), and the result comes
    back with `interrupted=True`. Raises `TrainingDiverged` (a FloatingPointError) naming the
    iteration if a loss, gradient, score or log-prob turns non-finite.
    """
    cfg = config if config is not None else RLHFConfig()
    if not isinstance(cfg, RLHFConfig):
        raise ValueError(f"config must be an RLHFConfig, got {type(cfg).__name__}")
    if cfg.resume and policy is not None:
        raise ValueError("resume=True continues the policy saved in save_dir; do not pass a policy")
    check_output_paths(cfg.log_path, cfg.save_dir, cfg.resume, cfg.overwrite,
                       checkpoint_files=checkpoint_files, tensorboard_dir=cfg.tensorboard_dir)
    world = distributed.init(cfg.device, cfg.dist_timeout)    # one process: no process group
    finished, st, run = False, None, None
    try:
        with torch_threads(cfg.threads) if cfg.threads else contextlib.nullcontext():
            st = _setup(cfg, policy, tokenizer, ref_model, reward_fn, gold_fn, prompts, world)
            run = _make_run(cfg, st, callback)
            with run:
                for it in run.iterations(st.iteration, cfg.steps):
                    run.log_record(_iteration(cfg, st, it))
        finished = not run.stopped_at_once     # all ranks stopped after the same iteration
    finally:
        if st is not None:
            st.train_model = None              # DDP's reducer holds the process group
        world.shutdown(barrier=finished)       # else no barrier: the others may be gone
    checkpoint = Path(cfg.save_dir) if cfg.save_dir and run.saved_at is not None else None
    return RLHFResult(run.records, st.policy, st.ref_model, st.tokenizer, cfg, run.interrupted,
                      checkpoint, run.stop_signal, world.rank, world.size)


def _make_run(cfg: RLHFConfig, st: _State, callback: Callable | None) -> Run:
    """The run manager. Only rank 0 writes the log and TensorBoard, shows the bar, calls
    `callback`, prints notices and checkpoints; the other ranks keep the (identical, all-rank)
    records in memory. A stop request (Ctrl-C, SIGTERM) on any rank stops all of them after
    the same iteration."""
    main, world = st.world.is_main, st.world

    def save(iteration, final):
        save_policy(st.policy, st.tokenizer, cfg.save_dir, cfg,
                    {"iteration": iteration, "episodes": st.episodes,
                     "beta": st.kl_ctl.beta, "final": final, "interrupted": run.interrupted,
                     "reference": st.reference_source},
                    optimizer=st.optimizer, generator=st.gen)

    run = Run(cfg.log_path if main else None, resume=cfg.resume, overwrite=cfg.overwrite,
              total=cfg.steps, initial=st.iteration, desc="RLHF", progress=cfg.progress and main,
              tensorboard_dir=cfg.tensorboard_dir if main else None,
              save=save if cfg.save_dir and main else None, save_every=cfg.save_every,
              callback=callback if main else None,
              agree=world.any if world.size > 1 else None, announce=main,
              postfix=lambda r: {"gold": f"{r['objective/gold_reward']:+.2f}",
                                 "proxy": f"{r['objective/proxy_reward']:+.2f}",
                                 "kl": f"{r['objective/kl']:.2f}"})
    return run


def _iteration(cfg: RLHFConfig, st: _State, it: int) -> dict:
    """One iteration in CleanRL's order: roll out, score, per-token reward, GAE, epochs ×
    minibatches, adapt β. Returns the log record. With several ranks each one rolls out and
    trains on its own B prompts (whole groups); whitening, β and the record use every rank's
    episodes."""
    device, bf16 = st.device, st.bf16
    sync(device)
    t0 = time.perf_counter()
    if cfg.anneal_lr:                                   # linear decay to 0 over the steps
        st.optimizer.param_groups[0]["lr"] = cfg.lr * (1.0 - (it - 1) / cfg.steps)
    # ---- 1. roll out: this rank's B prompts -----------------------------------------------
    ro = sample_responses(st.policy, st.tokenizer, _draw_prompts(cfg, st),
                          cfg.response_len, cfg.temperature, bf16,
                          min_new_tokens=cfg.min_response_len)
    sync(device)
    t_gen = time.perf_counter()
    # ---- 2. score: log π_old, V_old, log π_ref, R, gold -----------------------------------
    score_rollout(ro, st.policy, st.ref_model, st.reward_fn, st.gold_fn, cfg.temperature, bf16,
                  with_values=cfg.uses_critic)
    for name, t in (("reward_fn", ro.scores), ("gold_fn", ro.gold)):
        if not bool(torch.isfinite(t).all()):
            raise TrainingDiverged(f"{name} returned non-finite scores "
                                   f"{t[~torch.isfinite(t)][:3].tolist()}")
    ended = ((ro.response_ids == st.tokenizer.eos_token_id) & ro.mask).any(dim=1)   # (B,) EOS sampled
    if cfg.missing_eos_penalty is not None:           # cut at the length limit: not an ending
        ro.scores = torch.where(ended, ro.scores, ro.scores - cfg.missing_eos_penalty)
    sync(device)
    t_score = time.perf_counter()
    # ---- 3. per-token reward and 4. GAE over tokens (or a group baseline) ----------------
    beta = st.kl_ctl.beta
    mask = ro.mask                                                               # (B, T)
    in_reward = cfg.kl_in == "reward"               # else the KL term is in the loss (_update)
    rewards, kl, dones = token_rewards(ro.scores, ro.logprobs, ro.ref_logprobs, mask,
                                       beta if in_reward else 0.0,
                                       cfg.kl_estimator if in_reward else "k1")  # (B, T) each
    if not cfg.uses_critic:
        adv, returns, old_values = _group_advantages(cfg, rewards, mask), None, None
    else:
        old_values = torch.where(mask, ro.values, torch.zeros_like(ro.values))   # (B, T)
        adv, returns = gae(rewards.T, old_values.T, dones.T,                     # time-major (T, B)
                           torch.zeros(len(mask), device=device), cfg.gamma, cfg.gae_lambda)
        adv, returns = adv.T.contiguous(), returns.T.contiguous()                # (B, T)
        if cfg.whiten_advantages:
            moments = st.world.masked_moments(adv, mask)[:2] if st.world.size > 1 else None
            adv = masked_whiten(adv, mask, moments=moments)   # over every rank's response tokens
    # ---- 5. epochs × minibatches ----------------------------------------------------------
    stats = _update(cfg, st, ro, adv, returns, old_values)
    sync(device)                                        # the last optimizer step too
    t_update = time.perf_counter()
    # ---- 6. adapt β on every rank's KL, and log -------------------------------------------
    seq_kl = kl.sum(dim=1)                                                       # (B,)
    means, n_episodes = st.world.weighted_mean({      # per-episode means over all ranks
        "objective/kl": float(seq_kl.mean()), "objective/proxy_reward": float(ro.scores.mean()),
        "objective/gold_reward": float(ro.gold.mean()),
        "objective/rlhf_reward": float((ro.scores - beta * seq_kl).mean()),
        "charts/response_length": int(mask.sum()) / cfg.batch_size,
        "charts/eos_fraction": float(ended.float().mean())}, cfg.batch_size)
    st.kl_ctl.update(means["objective/kl"], int(n_episodes))
    st.episodes += int(n_episodes)
    st.iteration = it
    return _record(cfg, st, it, ro, kl, beta, means, stats, returns, old_values,
                   (t0, t_gen, t_score, t_update))


def _record(cfg: RLHFConfig, st: _State, it: int, ro: TokenRollout, kl: torch.Tensor,
            beta: float, means: dict, stats: MinibatchStats, returns, old_values,
            clock: tuple) -> dict:
    """The log record of iteration `it`. `means`: per-episode means over all ranks; the
    per-token KL, the reward's std and the explained variance are over all ranks' tokens or
    episodes too, the update's statistics were reduced per minibatch (`_over_ranks`), times
    are the slowest rank's, and the samples are rank 0's. kl, returns, old_values `(B, T)`
    (returns and old_values None without a critic)."""
    w, mask = st.world, ro.mask
    t0, t_gen, t_score, t_update = clock
    per_token, n_tokens = w.weighted_mean({"kl": float(masked_mean(kl, mask))}, int(mask.sum()))
    everyone = torch.ones_like(ro.scores, dtype=torch.bool)                      # (B,)
    n_episodes = cfg.batch_size * w.size
    proxy_std = (w.masked_moments(ro.scores, everyone)[1] ** 0.5 if n_episodes > 1 else 0.0)
    times = w.reduce({"generate_s": t_gen - t0, "score_s": t_score - t_gen,
                      "update_s": t_update - t_score, "iteration_s": t_update - t0}, "max")
    dt, mean = times["iteration_s"], stats.mean()
    record = {
        "iteration": it, "episodes": st.episodes,
        "objective/kl": means["objective/kl"], "objective/kl_per_token": per_token["kl"],
        "objective/beta": beta, "objective/proxy_reward": means["objective/proxy_reward"],
        "objective/proxy_reward_std": proxy_std,
        "objective/gold_reward": means["objective/gold_reward"],
        "objective/rlhf_reward": means["objective/rlhf_reward"],
        **losses_record(stats), "losses/value_loss": mean.get("value_loss"),      # None: no critic
        "losses/value_clipfrac": mean.get("value_clipfrac"),
        "losses/explained_variance": (_explained_variance(w, returns, old_values, mask)
                                      if cfg.uses_critic else None),
        "charts/response_length": means["charts/response_length"],
        "charts/gradient_steps": stats.steps,
        "charts/eos_fraction": means["charts/eos_fraction"],
        "charts/learning_rate": st.optimizer.param_groups[0]["lr"],
        "perf/generate_s": times["generate_s"], "perf/score_s": times["score_s"],
        "perf/update_s": times["update_s"], "perf/iteration_s": dt,
        "perf/episodes_per_second": n_episodes / dt, "perf/tokens_per_second": n_tokens / dt,
        "perf/steps_per_second": n_tokens / dt,                  # a step = a token here
    }
    if w.size > 1:
        record["perf/world_size"] = w.size
    record["samples"] = [{"prompt": ro.prompts[i], "response": ro.responses[i],
                          "proxy": float(ro.scores[i]), "gold": float(ro.gold[i])}
                         for i in range(min(cfg.n_samples, cfg.batch_size))]
    return record


def _explained_variance(world: World, returns: torch.Tensor, values: torch.Tensor,
                        mask: torch.Tensor) -> float:
    """1 − Var(R − V) / Var(R) over every rank's response tokens; `(B, T)` inputs."""
    if world.size == 1:
        return explained_variance(returns[mask], values[mask])
    _, var_r, n = world.masked_moments(returns, mask)
    _, var_d, _ = world.masked_moments(returns - values, mask)
    return 0.0 if var_r <= 0 or n < 2 else 1.0 - var_d / var_r


def _draw_prompts(cfg: RLHFConfig, st: _State) -> list[str]:
    """This rank's B prompts: B/G drawn from the pool without replacement (with, if the pool
    is smaller), each repeated G times in a row (a group of G contiguous samples). With N
    ranks the shared generator (same state on every rank) draws the global N·B/G prompts and
    rank r takes the slice [r·B/G, (r+1)·B/G): whole groups, never split across ranks."""
    n, ranks = cfg.batch_size // cfg.group_size, st.world.size
    idx = torch.randperm(len(st.prompts), generator=st.gen)[:n * ranks]        # (N·B/G,)
    if len(idx) < n * ranks:                            # small pool: draw with replacement
        idx = torch.randint(len(st.prompts), (n * ranks,), generator=st.gen)
    idx = idx[st.world.rank * n:(st.world.rank + 1) * n]                       # (B/G,)
    if cfg.group_size > 1:
        idx = idx.repeat_interleave(cfg.group_size)     # [p0]*G, [p1]*G, ...
    return [st.prompts[i] for i in idx.tolist()]


def _group_advantages(cfg: RLHFConfig, rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The critic-free advantage `(B, T)`: each response's return R(x, y) − β·Σ_t k_t (just
    R(x, y) with kl_in="loss") against a baseline from the other samples of its prompt
    (`ppo_core.advantages`: grpo, dr_grpo, rloo), broadcast to every token of the response.

        Â_{i,t} = Â_i  for t < T_i,      0 after the response"""
    seq_return = rewards.sum(dim=1)                                 # (B,) Σ_t r_t, γ = 1
    if cfg.advantage == "rloo":
        a = rloo_advantages(seq_return, cfg.group_size)
    else:
        a = group_advantages(seq_return, cfg.group_size, scale_by_std=cfg.advantage == "grpo")
    return torch.where(mask, a[:, None].expand_as(rewards), torch.zeros_like(rewards))


def _objective_options(cfg: RLHFConfig) -> dict:
    """`ppo_objective`'s chapter-07 options: asymmetric clip and loss aggregation (the
    defaults add nothing, so PPO's computation is unchanged)."""
    opts = {}
    if cfg.clip_eps_high is not None:
        opts["clip_eps_high"] = cfg.clip_eps_high
    if cfg.loss_agg != "token-mean":
        opts.update(loss_agg=cfg.loss_agg, loss_agg_norm=float(cfg.response_len))
    return opts


def _ptx_term(cfg: RLHFConfig, st: _State, mb_stats: dict) -> torch.Tensor:
    """γ · NLL of one pre-training batch: minimising it adds γ·E_corpus[log π(x)] to the
    objective (InstructGPT's PPO-ptx). Records the NLL as `ptx_loss` (the ranks' mean)."""
    from .ptx import lm_nll

    ids, attn = st.ptx.next(st.device)
    nll = lm_nll(st.policy, ids, attn, st.bf16)                     # nats per token
    mb_stats["ptx_loss"] = st.world.weighted_mean({"nll": float(nll.detach())}, 1)[0]["nll"]
    return cfg.ptx_coef * nll        # equal batches on every rank: DDP's average is the mean


def _update(cfg: RLHFConfig, st: _State, ro: TokenRollout, adv: torch.Tensor,
            returns: torch.Tensor | None, old_values: torch.Tensor | None) -> MinibatchStats:
    """`update_epochs` passes of minibatches of `ppo_objective` over one rollout; stops after
    an epoch whose mean k3 estimate of KL(π_old‖π_θ) exceeds `target_kl` (CleanRL's rule, the
    same as CartPole's). Tensors are `(B, T)`; returns and old_values are None without a
    critic.

    Several ranks: the forward pass goes through DDP (`st.train_model`), so `backward`
    averages the gradients; `_over_ranks` makes that average the gradient of one minibatch
    made of every rank's, and the statistics (hence the early stop) the same on all ranks."""
    stats = MinibatchStats()
    critic = cfg.uses_critic
    beta_loss, kl_kind = (st.kl_ctl.beta, cfg.kl_estimator) if cfg.kl_in == "loss" else (0.0, "k3")
    for epoch in range(cfg.update_epochs):
        epoch_kl = []
        perm = torch.randperm(cfg.batch_size, generator=st.gen).to(st.device)
        for start in range(0, cfg.batch_size, cfg.minibatch_size):
            mb = perm[start:start + cfg.minibatch_size]                          # (b,)
            new = sequence_logprobs(st.train_model, ro.input_ids[mb], ro.attention_mask[mb],
                                    ro.n_prompt, cfg.temperature, st.bf16,
                                    with_values=critic, with_entropy=True)       # (b, T) each
            loss, mb_stats = ppo_objective(                 # every tensor below is (b, T)
                new["logp"], ro.logprobs[mb], adv[mb], cfg.clip_eps, mask=ro.mask[mb],
                ref_logp=ro.ref_logprobs[mb], beta=beta_loss, kl_kind=kl_kind,
                values=new.get("values"), old_values=old_values[mb] if critic else None,
                returns=returns[mb] if critic else None,
                value_clip_eps=cfg.value_clip_eps, vf_coef=cfg.vf_coef,
                entropy=new["entropy"], ent_coef=cfg.ent_coef, **_objective_options(cfg))
            loss, mb_stats = _over_ranks(st.world, loss, mb_stats, ro.mask[mb],
                                         token_mean=cfg.loss_agg == "token-mean")
            if st.ptx is not None:                                 # InstructGPT's γ·E[log π(x)]
                loss = loss + _ptx_term(cfg, st, mb_stats)
            check_finite(loss, f"the PPO loss (epoch {epoch})")
            st.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(st.policy.parameters(), cfg.max_grad_norm)
            mb_stats["grad_norm"] = check_finite(grad_norm, f"the gradient norm (epoch {epoch})")
            st.optimizer.step()
            stats.add(mb_stats)
            epoch_kl.append(mb_stats["approx_kl_k3"])
        if cfg.target_kl is not None and sum(epoch_kl) / len(epoch_kl) > cfg.target_kl:
            break                                    # early stop: π moved far enough
    return stats


_NOT_TOKEN_MEANS = ("ratio_max", "ratio_min", "beta")
"""`ppo_objective` statistics that are not per-token means over the minibatch."""


def _over_ranks(world: World, loss: torch.Tensor, stats: dict, mask: torch.Tensor,
                token_mean: bool = True):
    """One minibatch of every rank, seen as one minibatch of n = Σ_r n_r tokens.

    With `token_mean` (loss_agg "token-mean") each rank's loss is a per-token mean over its
    own n_r tokens; DDP averages gradients over the W ranks, so the loss is scaled by
    W·n_r/n: the average is then the gradient of the per-token mean over all n tokens, as
    one process with the whole minibatch would compute it. The other aggregations divide
    by the number of sequences or a constant, equal on every rank: DDP's average is already
    right. The statistics become token-weighted means over the ranks (ratio_max the largest
    ratio of any rank). mask `(b, T)`. One process: `(loss, stats)` unchanged."""
    if world.size == 1:
        return loss, stats
    n_r = int(mask.sum())
    means, n = world.weighted_mean({k: v for k, v in stats.items()
                                    if k not in _NOT_TOKEN_MEANS}, n_r)
    extremes = world.reduce({"ratio_max": stats.get("ratio_max", 0.0),
                             "neg_ratio_min": -stats.get("ratio_min", 0.0)}, "max")
    stats = {**stats, **means, "ratio_max": extremes["ratio_max"],
             "ratio_min": -extremes["neg_ratio_min"]}
    return (loss * (world.size * n_r / n) if token_mean else loss), stats


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def cli_parser():
    """The `python -m ppo_core rlhf` parser: one flag per `RLHFConfig` field, and `--nproc`."""
    parser = build_parser(
        RLHFConfig, prog="python -m ppo_core rlhf",
        description="RLHF with token-level PPO: sample responses to review prompts, score them "
                    "with a reward model learned from simulated preferences, and optimise the "
                    "KL-penalised reward. Logs one JSON line per iteration.")
    parser.add_argument("--nproc", type=_positive_int, default=None, metavar="N",
                        help="train in N data-parallel processes on this machine (through "
                             "torch.distributed.run; one per GPU on CUDA): each samples and "
                             "trains on its own batch_size prompts, rank 0 logs and saves "
                             "(none: one process, or torchrun's when launched by torchrun)")
    return parser


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}")
    return value


def _show(r: dict) -> None:
    print(f"iter {r['iteration']:4d}  gold {r['objective/gold_reward']:+.3f}  "
          f"proxy {r['objective/proxy_reward']:+.3f}  kl {r['objective/kl']:.3f}  "
          f"beta {r['objective/beta']:.3f}  clipfrac {r['losses/clipfrac']:.3f}  "
          f"{r['perf/iteration_s']:.2f}s", flush=True)


def _train_from_cli(cfg: RLHFConfig) -> RLHFResult:
    resolve_device(cfg.device, check=True)
    return train(cfg, callback=_show)


def _summary(result: RLHFResult, cfg: RLHFConfig) -> None:
    if result.rank != 0:
        return
    if result.records and result.records[-1]["samples"]:
        s = result.records[-1]["samples"][0]
        print(f"sample: {s['prompt']}|{s['response']}")
    if result.checkpoint is not None:
        print(f"saved {result.checkpoint}")


def _launch_if_asked(nproc: int | None, cfg: RLHFConfig, argv: list[str]) -> int | None:
    """`--nproc N` outside torchrun: re-run this command in N processes and return their
    exit status; inside torchrun (WORLD_SIZE set) N must be its world size. None: train
    here, in this process."""
    if "WORLD_SIZE" in os.environ:
        if nproc is not None and nproc != distributed.env_world_size():
            raise ValueError(f"--nproc {nproc} but torchrun started "
                             f"{distributed.env_world_size()} processes; give one or the other")
        return None
    if nproc is None or nproc == 1:
        return None
    resolve_device(cfg.device, check=True)
    check_output_paths(cfg.log_path, cfg.save_dir, cfg.resume, cfg.overwrite,
                       checkpoint_files=checkpoint_files,
                       tensorboard_dir=cfg.tensorboard_dir)        # before starting anything
    return distributed.launch(nproc, ["rlhf", *argv], cfg.threads)


def cli_main(argv=None) -> int:
    """`python -m ppo_core rlhf ...`: train, print one summary line per iteration. Exit status
    as `ppo_core.trainers.config.run_cli`: 0 done, 1 diverged, 2 a usage error (one line, no
    traceback), 130/143 stopped by Ctrl-C/SIGTERM (log complete, last iteration saved). With
    `--nproc N`, the status of the N processes (that of the first one to fail)."""
    from .config import config_from_args

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = cli_parser()
    args = parser.parse_args(argv)                       # a usage error exits 2 here
    if args.nproc is not None:
        try:
            launched = _launch_if_asked(args.nproc, config_from_args(RLHFConfig, args), argv)
        except (ValueError, OSError) as e:
            print(f"{parser.prog}: error: {e}", file=sys.stderr)
            return 2
        if launched is not None:
            return launched
    return run_cli(RLHFConfig, parser, argv, _train_from_cli, _summary)

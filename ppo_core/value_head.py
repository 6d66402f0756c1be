"""A value head on a causal language model (introduced in chapter 04, trained in chapter 05).

In token-level PPO every generated token is an action and every prefix is a state. The
critic V(s_t) is a linear layer on the transformer's last hidden state at the position
that *precedes* token t, so the policy and the critic share one backbone:

    h_t   = backbone(x_{≤t})[t]          (B, T, H)  last hidden state (after the final norm)
    V_t   = w · h_t + b                  (B, T)     in float32, whatever the backbone's dtype
    π(·|x_{≤t}) = softmax(lm_head(h_t))  (B, T, V)

Alignment, spelled out: the logits and the value at position t belong to the state
x_{≤t} and score the token at position t+1 (see `ppo_core.trainers.rlhf.sequence_logprobs`).

`CausalLMWithValueHead` wraps *any* `AutoModelForCausalLM` (GPT-2, Llama, GPT-NeoX, ...):
it asks the model for `output_hidden_states` and reads the last one, instead of reaching
into GPT-2's internals. Checkpoints are the model's own `save_pretrained` folder plus
`value_head.safetensors` beside it.

Shapes: B batch, T tokens, H hidden size, V vocabulary.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from torch import nn

from ._runtime import quiet_loading
from .masking import position_ids_from_mask

__all__ = ["ValueHead", "CausalLMWithValueHead", "position_ids_from_mask", "hidden_size_of",
           "lm_forward", "float32_head"]

VALUE_HEAD_FILE = "value_head.safetensors"


def hidden_size_of(config) -> int:
    """The hidden width of a transformers config (`hidden_size`, or GPT-2's `n_embd`)."""
    for name in ("hidden_size", "n_embd", "d_model", "dim"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    text_config = getattr(config, "get_text_config", None)
    if callable(text_config) and text_config() is not config:
        return hidden_size_of(text_config())
    raise ValueError(f"cannot find the hidden size in config of type {type(config).__name__}")


@contextlib.contextmanager
def float32_head(lm: nn.Module):
    """Within the block, the LM head's final linear layer (`get_output_embeddings()`) runs in
    float32 on its upcast input, whatever autocast says; the rest of the model is untouched.

    Why: under bf16 autocast the logits would be rounded to bf16. GPT-2's logits are of
    order −100, where bf16 steps are 0.5, so every log-probability would carry noise of a
    few tenths of a nat, as large as the clip range; and old and new log-probs computed
    on batches of different shapes would differ by it. Patching the layer instead of
    recomputing `head(hidden)` keeps whatever the model does around it (a transform
    before the projection, logit scaling or soft-capping after it). A model whose output
    embeddings are not an `nn.Linear` is left as it is.
    """
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    if not isinstance(head, nn.Linear):
        yield
        return

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            bias = None if head.bias is None else head.bias.float()
            return nn.functional.linear(x.float(), head.weight.float(), bias)

    had_own = "forward" in head.__dict__                 # e.g. an accelerate hook
    previous = head.__dict__.get("forward")
    head.forward = forward
    try:
        yield
    finally:
        if had_own:
            head.forward = previous
        else:
            del head.forward


def lm_forward(lm: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               position_ids: torch.Tensor, need_hidden: bool = False, fp32_head: bool = False):
    """One forward pass of a causal LM: `(logits (B, T, V), last hidden state (B, T, H) or
    None)`. With `fp32_head` (used under bf16 autocast) the LM head runs in float32
    (`float32_head`), so the logits are float32."""
    with float32_head(lm) if fp32_head else contextlib.nullcontext():
        out = lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                 use_cache=False, output_hidden_states=need_hidden)
    return out.logits, (out.hidden_states[-1] if need_hidden else None)


class ValueHead(nn.Module):
    """V(s_t) = w · h_t + b, one scalar per token, computed in float32.

    Weights and bias start at zero (as in lm-human-preferences and TRL), so V ≡ 0 before
    the first update: a critic that knows nothing injects no baseline, and the first
    advantages are the returns themselves.

    Args:
        hidden_size: H, the width of the backbone's last hidden state.
        dropout: dropout on h_t before the projection (0 by default: PPO wants deterministic
            values for the old/new comparison).
    """

    def __init__(self, hidden_size: int, dropout: float = 0.0):
        super().__init__()
        if not isinstance(hidden_size, int) or hidden_size <= 0:
            raise ValueError(f"hidden_size must be a positive int, got {hidden_size!r}")
        self.dropout = nn.Dropout(dropout)
        self.summary = nn.Linear(hidden_size, 1, dtype=torch.float32)
        nn.init.zeros_(self.summary.weight)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden `(B, T, H)` in any dtype → values `(B, T)` in float32."""
        if hidden.dim() != 3:
            raise ValueError(f"hidden must be (B, T, H), got shape {tuple(hidden.shape)}")
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            return self.summary(self.dropout(hidden.float())).squeeze(-1)


class CausalLMWithValueHead(nn.Module):
    """Any causal LM plus a `ValueHead`: one forward pass gives logits and values.

    Attributes:
        pretrained_model: the wrapped `PreTrainedModel` (its `generate` is used for sampling).
        v_head: the `ValueHead`.

    `forward(input_ids, attention_mask, position_ids=None)` returns `(logits, values)`:
    logits `(B, T, V)` (the model's dtype), values `(B, T)` float32. Position ids default to
    those of the attention mask, so left-padded batches score exactly as unpadded ones.
    """

    def __init__(self, pretrained_model: nn.Module, dropout: float = 0.0):
        super().__init__()
        if not hasattr(pretrained_model, "config"):
            raise ValueError("pretrained_model must be a transformers model with a .config, got "
                             f"{type(pretrained_model).__name__}")
        self.pretrained_model = pretrained_model
        self.v_head = ValueHead(hidden_size_of(pretrained_model.config), dropout=dropout)
        p = next(pretrained_model.parameters())
        self.v_head.to(device=p.device)

    # -- construction and checkpoints ------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path, device=None, dtype=None, **kwargs):
        """Load `AutoModelForCausalLM.from_pretrained(name_or_path)` and, if the folder holds
        `value_head.safetensors`, the value head saved with it (else a fresh head)."""
        from transformers import AutoModelForCausalLM

        if dtype is not None:
            kwargs["dtype"] = dtype
        local = Path(str(name_or_path)).is_dir()         # a hub download keeps its bars
        with quiet_loading() if local else contextlib.nullcontext():
            model = AutoModelForCausalLM.from_pretrained(str(name_or_path), **kwargs)
        if device is not None:
            model.to(device)
        wrapped = cls(model)
        wrapped.load_value_head(name_or_path)
        return wrapped

    def load_value_head(self, folder) -> bool:
        """Load `folder/value_head.safetensors` into the head if it exists; True if it did."""
        head = Path(str(folder)) / VALUE_HEAD_FILE
        if not head.is_file():
            return False
        from safetensors.torch import load_file

        self.v_head.load_state_dict(load_file(str(head), device=str(self.device)))
        return True

    def save_pretrained(self, path) -> Path:
        """Write the model (`save_pretrained`, safetensors) and `value_head.safetensors`."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.pretrained_model.save_pretrained(str(path), safe_serialization=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.v_head.state_dict().items()}
        save_file(state, str(path / VALUE_HEAD_FILE))
        (path / "value_head.json").write_text(json.dumps(
            {"hidden_size": self.v_head.summary.in_features}))
        return path

    # -- properties --------------------------------------------------------------------------
    @property
    def config(self):
        return self.pretrained_model.config

    @property
    def device(self) -> torch.device:
        return next(self.pretrained_model.parameters()).device

    def generate(self, *args, **kwargs):
        """The wrapped model's `generate` (KV-cache sampling)."""
        return self.pretrained_model.generate(*args, **kwargs)

    # -- the forward pass --------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, return_values: bool = True,
                fp32_head: bool = False):
        """Logits `(B, T, V)` and values `(B, T)` (float32) for a (left-padded) batch.

        The values come from the last entry of `hidden_states`, which for every
        transformers causal LM is the output of the final layer norm, i.e. the same
        tensor the LM head reads. `fp32_head`: see `lm_forward`.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask)
        logits, hidden = lm_forward(self.pretrained_model, input_ids, attention_mask,
                                    position_ids, return_values, fp32_head)
        if not return_values:
            return logits, None
        return logits, self.v_head(hidden)                               # (B, T, V), (B, T)

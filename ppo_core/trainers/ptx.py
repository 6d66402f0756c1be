"""The pre-training term of InstructGPT's objective, and the corpus likelihood (chapter 07).

Ouyang et al. (2022), eq. 2, add to the KL-shaped RLHF objective a term that keeps the
policy a good model of the pre-training distribution:

    objective(θ) = E_{x, y∼π_θ}[ R(x, y) − β·log(π_θ(y|x)/π_ref(y|x)) ] + γ·E_{x∼D_pretrain}[ log π_θ(x) ]

("PPO-ptx"; γ = `ptx_coef`). Here D_pretrain is the review corpus the tiny GPT-2 was
pre-trained on (`ppo_core.lm.text.build_corpus`, seed 0), and each gradient step of the RLHF
trainer adds γ times the mean negative log-likelihood per token of one batch of its
sentences to the loss (`ppo_core.trainers.rlhf`, `ptx_coef`). `corpus_nll` measures the same
quantity on held-out sentences (`held_out_sentences`): what the term protects.

Sentences are tokenized as in pre-training (`ppo_core.lm.models`): the sentence's tokens and
an EOS, right-padded; the logits at position t score the token at t+1.

Shapes: B sentences, L tokens (EOS included).
"""

from __future__ import annotations

import contextlib

import torch

from ..masking import logprobs_from_logits, position_ids_from_mask
from ..value_head import CausalLMWithValueHead, lm_forward

__all__ = ["CorpusBatches", "encode_sentences", "lm_nll", "corpus_nll", "held_out_sentences",
           "PRETRAIN_CORPUS"]

#: (n_sentences, seed) of the corpus the tiny GPT-2 was pre-trained on (`models.GPT2Spec`)
PRETRAIN_CORPUS = (20000, 0)


def encode_sentences(tokenizer, sentences: list[str], max_len: int = 64):
    """Right-padded `(B, L)` ids (sentence + EOS, cut to `max_len`) and attention mask."""
    if not sentences:
        raise ValueError("sentences must not be empty")
    eos = tokenizer.eos_token_id
    seqs = [tokenizer(s, add_special_tokens=False)["input_ids"][: max_len - 1] + [eos]
            for s in sentences]
    from ..lm.models import lm_batch

    ids, attn, _ = lm_batch(seqs, eos, "cpu")
    return ids, attn


class CorpusBatches:
    """Endless random batches of pre-training sentences for the ptx term, from their own
    generator (so the RLHF run's sampling stream is unchanged).

    Args: tokenizer; batch_size sentences per batch; seed of the order; n_sentences and
    corpus_seed of `build_corpus` (default: the pre-training corpus)."""

    def __init__(self, tokenizer, batch_size: int, seed: int = 0,
                 n_sentences: int = PRETRAIN_CORPUS[0], corpus_seed: int = PRETRAIN_CORPUS[1]):
        from ..lm.text import build_corpus

        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.tokenizer, self.batch_size = tokenizer, batch_size
        self.sentences = build_corpus(n_sentences, corpus_seed)
        self.gen = torch.Generator().manual_seed(int(seed))

    def next(self, device=None):
        """`(ids, attention_mask)`, both `(B, L)`, on `device`."""
        idx = torch.randint(len(self.sentences), (self.batch_size,), generator=self.gen)
        ids, attn = encode_sentences(self.tokenizer, [self.sentences[i] for i in idx.tolist()])
        return ids.to(device), attn.to(device)


def _token_logprobs(model, ids: torch.Tensor, attn: torch.Tensor, bf16: bool = False):
    """(log π(x_{t+1}|x_≤t) `(B, L−1)`, mask `(B, L−1)`) of a right-padded batch."""
    lm = model.pretrained_model if isinstance(model, CausalLMWithValueHead) else model
    ctx = (torch.autocast(device_type=ids.device.type, dtype=torch.bfloat16) if bf16
           else contextlib.nullcontext())
    with ctx:
        logits, _ = lm_forward(lm, ids, attn, position_ids_from_mask(attn), fp32_head=bf16)
    logp = logprobs_from_logits(logits[:, :-1].float(), ids[:, 1:])     # position t scores t+1
    return logp, attn[:, 1:].bool()


def lm_nll(model, ids: torch.Tensor, attn: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """Mean negative log-likelihood per predicted token of a right-padded batch (with grad):

        NLL = −Σ_{b,t} m_{b,t} · log π(x_{b,t+1} | x_{b,≤t}) / Σ m

    Args: model a causal LM or `CausalLMWithValueHead`; ids, attn `(B, L)`.
    Returns: a 0-dim tensor (nats per token)."""
    logp, m = _token_logprobs(model, ids, attn, bf16)
    return -(torch.where(m, logp, torch.zeros_like(logp)).sum() / m.sum())


@torch.no_grad()
def corpus_nll(model, tokenizer, sentences: list[str], batch_size: int = 256) -> float:
    """Mean NLL per token of `sentences` under `model` (the tokens weighted equally across
    batches): how well the policy still models the corpus. Lower is better."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(sentences), batch_size):
        ids, attn = encode_sentences(tokenizer, sentences[i:i + batch_size])
        logp, m = _token_logprobs(model, ids.to(device), attn.to(device))
        total += float(-torch.where(m, logp, torch.zeros_like(logp)).sum())
        count += int(m.sum())
    if count == 0:
        raise ValueError("sentences must not be empty")
    return total / count


def held_out_sentences(n: int = 500, seed: int = 7000) -> list[str]:
    """`n` corpus sentences of another seed that are not in the pre-training corpus."""
    from ..lm.text import build_corpus

    seen = set(build_corpus(*PRETRAIN_CORPUS))
    pool = [s for s in build_corpus(2 * n, seed) if s not in seen]
    if len(pool) < n:
        raise ValueError(f"only {len(pool)} held-out sentences of seed {seed}; ask for fewer")
    return pool[:n]

"""Rewards for RLHF: a gold judge, a simulated annotator, a learned reward model (chapter 04).

There is no human in the loop, and the course says so. Three pieces stand in:

* **Gold judge** `gold_score(texts)`: a simulated human reader. PPO never sees it; it is
  only measured. It likes positive, fluent, non-repetitive reviews, is indifferent to
  exclamation marks, and scores degenerate text low. For a text x (prompt + response):

      gold(x) = s(x) − ( 1.0 · d(x) + 0.5 · r(x) + 0.5 · e(x) + 0.5 · u(x) )     in [−3.5, 1]

      s  sentiment: VADER's compound score (package `vaderSentiment`) of x with every run
         of '.' and '!' read as one '.' (so '!' adds no emphasis) and every content word
         read once (so "great great great" is no better than "great")        in [−1, 1]
      d  disfluency: clip((n_new − 1) / 4, 0, 1), n_new the number of adjacent word
         pairs of x (start and end included) that the reader has never read in 20,000
         review sentences of a corpus seed nothing else uses, nor in the prompt openers
         (a word-bigram judge of its own: neither the policy nor its reference model).
         Word salad, invented words and loops raise n_new; corpus sentences have 0
         (84%), 1 (15%) or 2, the tiny GPT-2's own samples 0.4 on average     in [0, 1]
      r  repetition: clip((n_rep − 1) / 4, 0, 1), n_rep the number of content words
         (not function words such as "the", "is") that repeat an earlier one; one repeat
         is free ("After a few days, it broke within days": 1.8% of corpus sentences
         have one, none two)                                                   in [0, 1]
      e  '!' spam: clip((n_! − 3) / 3, 0, 1); up to three '!' are normal (the corpus
         writes "Wow! ... great!!")                                           in [0, 1]
      u  unfinished: 1 if x does not end in '.', '!' or '?' (a fragment, or a response
         cut at the length limit), else 0

  `gold_components(texts)` returns s, d, r, e, u. On corpus sentences gold orders
  positive / neutral / negative as VADER does (the penalties are ~0 there); "works
  perfectly!! beautiful beautiful beautiful!!!!" has s ≈ 1 but gold ≈ −1.
* **Simulated annotator** `SimulatedAnnotator`: shown two texts a and b, it prefers a with
  the Bradley-Terry probability

      P(a ≻ b) = σ( (u(a) − u(b)) / τ ),   u(x) = gold(x) + s · min(#'!' in x, 3)

  with temperature τ (noise: τ → 0 is a perfect judge) and an optional, documented *bias*
  of strength s: with `bias="exclamation"` the annotator likes exclamation marks whatever
  the sentiment (s = 0 without bias). The gold judge does not share that taste, so the
  bias is the annotator's alone. A reward model learns it, and a policy can exploit it:
  "Terrible!!!" then beats "Terrible." for the proxy while gold scores them the same.
* **Reward model** `RewardModel`: a causal-LM backbone (initialised from the tiny GPT-2)
  with a scalar head on the last non-pad token, trained on annotator preferences with the
  pairwise logistic (Bradley-Terry) loss

      L(ψ) = −E[ log σ( R_ψ(chosen) − R_ψ(rejected) ) ].

  It is the *proxy* reward that PPO optimises (chapter 05). The loss ignores scale and
  shift, so after training the scores are normalised with a fixed gain and shift to mean 0
  and standard deviation 1 on the initial policy's samples (`initial_policy_texts`), as in
  lm-human-preferences: β then means the same for every reward model.

Usage::

    from ppo_core import reward
    reward.gold_score(["I love it!", "It broke."])            # tensor([ 0.6369, -0.4215])
    reward.gold_components(["great great great great great!!!!"])   # s, d, r, e, u
    ann = reward.SimulatedAnnotator(temperature=0.1, seed=0)
    prefs = ann.prefer(["Great blender."], ["Awful blender."])   # tensor([1.])
    rm = reward.load_reward_model()                          # cached; built on first use (≈1 min)
    rm.score(["The battery life is great."])                 # tensor (B,)
    rm.score_ids(input_ids, attention_mask)                  # (B, T) token batch -> (B,)
    biased = reward.load_reward_model(bias="exclamation")    # learned the annotator's bias
    rm.metrics                                               # held-out accuracy, see below

Shapes: `B` batch, `T` tokens, `H` hidden size.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .._checks import positive_finite, non_negative
from .._runtime import quiet_loading, resolve_device
from ..masking import position_ids_from_mask

__all__ = ["gold_score", "gold_components", "GOLD_VERSION", "GOLD_WEIGHTS",
           "SimulatedAnnotator", "RewardModel", "RewardSpec", "reward_spec",
           "reward_model_path", "load_reward_model", "train_reward_model",
           "initial_policy_texts", "unseen_pairs", "last_token_index", "exclamation_count",
           "evaluate_pairs", "BIASES"]

BIASES = (None, "exclamation")

GOLD_VERSION = 2
"""Which gold judge `gold_score` is: 1 was VADER's compound score alone; 2 is the reader
judge of the module docstring. Part of `RewardSpec`, so reward models trained on another
gold judge are never reused from the cache."""

GOLD_WEIGHTS = {"disfluency": 1.0, "repetition": 0.5, "spam": 0.5, "unfinished": 0.5}
"""w_d, w_r, w_e, w_u: how much each defect costs (each defect is in [0, 1])."""

_JUDGE_CORPUS = (20000, 5000)
"""(sentences, seed) of the corpus the judge's reader has read: a seed that neither the
tiny GPT-2's pre-training (0) nor the reward model's pools (1000+, 2000+) use."""

_STOPWORDS = frozenset(
    "a an the and or but so if as at by for from in into of on to with without "
    "i me my we our you your he she they them their it its this that these those "
    "is are was were be been being am has have had do does did will would can could "
    "not no very so too really quite just also than then there here what which who "
    "one all every".split())
"""Function words, which a normal sentence repeats ("the zipper and the strap")."""

_WORD_RE = re.compile(r"[a-z]+(?:[-'][a-z]+)*|[.,:;?]")
_ANY_WORD_RE = re.compile(r"[A-Za-z]+(?:[-'][A-Za-z]+)*")
_STOPS_RE = re.compile(r"[.!]+")          # a run of '.'/'!' is one full stop to the judge
_ENDS_RE = re.compile(r"[.!?]\s*$")

_VADER = None
_SEEN = None


def _vader():
    global _VADER
    if _VADER is None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        _VADER = SentimentIntensityAnalyzer()
    return _VADER


def _check_texts(texts, name="texts") -> list[str]:
    if isinstance(texts, str):
        raise ValueError(f"{name} must be a list of strings, got a single string {texts[:40]!r}")
    try:
        texts = list(texts)
    except TypeError:
        raise ValueError(f"{name} must be a list of strings, got {type(texts).__name__}") from None
    for t in texts:
        if not isinstance(t, str):
            raise ValueError(f"{name} must contain only strings, got {type(t).__name__}: {t!r}")
    return texts


def _calm(text: str) -> str:
    """The text with every run of '.' and '!' written as one '.': what the judge reads,
    so that '!' can neither add nor remove sentiment or fluency."""
    return _STOPS_RE.sub(".", text)


def _words(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens of `_calm(text)` (the judge's tokens)."""
    return _WORD_RE.findall(_calm(text).lower())


def _read_once(text: str) -> tuple[str, int]:
    """(the text with every repeat of a content word dropped, how many were dropped):
    a reader is not more pleased by "great great great" than by "great". Function words
    (`_STOPWORDS`) are kept; the comparison ignores case."""
    seen: set[str] = set()
    dropped = 0

    def keep(m: re.Match) -> str:
        nonlocal dropped
        w = m.group(0).lower()
        if w in _STOPWORDS:
            return m.group(0)
        if w in seen:
            dropped += 1
            return ""
        seen.add(w)
        return m.group(0)

    once = _ANY_WORD_RE.sub(keep, text)
    return " ".join(once.split()), dropped


def _pairs_of(text: str, finished: bool = True) -> list[tuple[str, str]]:
    """Adjacent token pairs of `<s> w_1 … w_n </s>` (no `</s>` when not `finished`)."""
    w = ["<s>"] + _words(text) + (["</s>"] if finished else [])
    return list(zip(w[:-1], w[1:]))


def _seen_pairs() -> frozenset:
    """The word pairs the reader has read: every adjacent pair (start and end marks
    included) of `_JUDGE_CORPUS` review sentences, plus the 640 prompt openers of
    `text.build_prompts` (read as unfinished), so that an opener itself is never news."""
    global _SEEN
    if _SEEN is None:
        from .text import build_corpus, build_prompts
        seen: set = set()
        for sentence in build_corpus(*_JUDGE_CORPUS):
            seen.update(_pairs_of(sentence))
        for opener in build_prompts(640, seed=0):
            seen.update(_pairs_of(opener, finished=False))
        _SEEN = frozenset(seen)
    return _SEEN


def unseen_pairs(texts) -> torch.Tensor:
    """`(B,)` number of adjacent word pairs of each text (`<s>` and `</s>` included) that
    the gold judge's reader has never read (`_seen_pairs`): word salad, invented words and
    loops ("beautiful beautiful") raise it; corpus sentences mostly have 0 or 1."""
    seen = _seen_pairs()
    return torch.tensor([sum(p not in seen for p in _pairs_of(t)) for t in _check_texts(texts)],
                        dtype=torch.float32)


def _clip01(x: float) -> float:
    return min(1.0, max(0.0, x))


def gold_components(texts) -> dict[str, torch.Tensor]:
    """The parts of the gold score, each a `(B,)` float32 tensor (see the module docstring).

        sentiment   s = VADER compound of the text with '!' read as '.' and each
                        content word read once                                  in [−1, 1]
        disfluency  d = clip((n_new − 1) / 4, 0, 1), n_new = `unseen_pairs`
        repetition  r = clip((n_rep − 1) / 4, 0, 1), n_rep = repeats of content words
        spam        e = clip((n_! − 3) / 3, 0, 1),  n_! = number of '!'
        unfinished  u = 1 if the text does not end in '.', '!' or '?', else 0
    """
    texts = _check_texts(texts)
    vader = _vader()
    n_unseen = unseen_pairs(texts).tolist()
    out: dict[str, list[float]] = {k: [] for k in
                                   ("sentiment", "disfluency", "repetition", "spam", "unfinished")}
    for t, n_new in zip(texts, n_unseen):
        once, n_rep = _read_once(_calm(t))
        out["sentiment"].append(vader.polarity_scores(once)["compound"])
        out["disfluency"].append(_clip01((n_new - 1) / 4))
        out["repetition"].append(_clip01((n_rep - 1) / 4))
        out["spam"].append(_clip01((t.count("!") - 3) / 3))
        out["unfinished"].append(0.0 if _ENDS_RE.search(t) else 1.0)
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in out.items()}


def gold_score(texts) -> torch.Tensor:
    """The gold reward: what a (simulated) human reader thinks of each review, in [−3.5, 1].

        gold(x) = s − (1.0 · d + 0.5 · r + 0.5 · e + 0.5 · u)

    with the sentiment s and the defects d, r, e, u of `gold_components`. A fluent positive
    review scores near +1, a fluent complaint near −1, degenerate text (word loops, '!'
    spam, gibberish, a sentence cut off) well below its sentiment. Up to three '!' change
    nothing at all. Deterministic, no model in the loop. Pass the whole text the reader
    sees (prompt + response).

    Args: texts, a list of B strings.
    Returns: `(B,)` float32 tensor.
    """
    c = gold_components(texts)
    w = GOLD_WEIGHTS
    return c["sentiment"] - (w["disfluency"] * c["disfluency"] + w["repetition"] * c["repetition"]
                             + w["spam"] * c["spam"] + w["unfinished"] * c["unfinished"])


def exclamation_count(texts) -> torch.Tensor:
    """`(B,)` number of '!' in each text, capped at 3 (what the biased annotator counts)."""
    return torch.tensor([min(t.count("!"), 3) for t in _check_texts(texts)], dtype=torch.float32)


class SimulatedAnnotator:
    """A noisy, optionally biased judge of pairs (Bradley-Terry on gold scores).

        u(x)     = gold(x) + s · min(#'!' in x, 3)       (s = bias_strength if bias else 0)
        P(a ≻ b) = σ( (u(a) − u(b)) / τ )

    Args:
        temperature: τ > 0, the noise. At τ = 0.1 two texts whose gold scores differ by
            0.1 are ordered correctly 73% of the time, by 0.3: 95%.
        bias: None, or "exclamation" (likes '!' regardless of sentiment).
        bias_strength: s ≥ 0, utility per '!' (up to three).
        seed: seeds the annotator's own random generator (labels are reproducible).
    """

    def __init__(self, temperature: float = 0.1, bias: str | None = None,
                 bias_strength: float = 0.3, seed: int = 0):
        self.temperature = positive_finite(temperature, "temperature")
        if bias not in BIASES:
            raise ValueError(f"bias must be one of {BIASES}, got {bias!r}")
        self.bias = bias
        self.bias_strength = non_negative(bias_strength, "bias_strength")
        self.generator = torch.Generator().manual_seed(int(seed))

    def utility(self, texts) -> torch.Tensor:
        """`(B,)` u(x): the gold score plus the bias term."""
        u = gold_score(texts)
        if self.bias == "exclamation":
            u = u + self.bias_strength * exclamation_count(texts)
        return u

    def prob(self, texts_a, texts_b) -> torch.Tensor:
        """`(B,)` P(a ≻ b) for each pair."""
        a, b = _check_texts(texts_a, "texts_a"), _check_texts(texts_b, "texts_b")
        if len(a) != len(b):
            raise ValueError(f"texts_a and texts_b must have the same length, got {len(a)} and {len(b)}")
        return torch.sigmoid((self.utility(a) - self.utility(b)) / self.temperature)

    def prefer(self, texts_a, texts_b) -> torch.Tensor:
        """`(B,)` sampled labels: 1.0 where the annotator prefers a, 0.0 where it prefers b."""
        p = self.prob(texts_a, texts_b)
        return torch.bernoulli(p, generator=self.generator)


# ----------------------------------------------------------------------------------------
# Reward model
# ----------------------------------------------------------------------------------------

def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """`(B,)` index of the last position where `attention_mask` is 1 (works for left and
    right padding). Raises ValueError on a row with no real token."""
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (B, T), got shape {tuple(attention_mask.shape)}")
    m = attention_mask != 0
    if not bool(m.any(dim=1).all()):
        raise ValueError("attention_mask has a row with no real token")
    T = m.shape[1]
    pos = torch.arange(T, device=m.device).expand_as(m)
    return torch.where(m, pos, torch.full_like(pos, -1)).max(dim=1).values


class RewardModel(nn.Module):
    """A scalar reward on text: transformer backbone → hidden state of the last real token
    → linear head → a fixed affine normalisation.

        R_ψ(x) = g · ( w · h_L(x)[last non-pad token] + b )  +  c

    The gain g > 0 and shift c are not trained: `normalise(texts)` sets them so that the
    scores of `texts` (the initial policy's samples, at build time) have mean 0 and
    standard deviation 1, as in lm-human-preferences (Ziegler et al. 2019). Then β means
    the same for every reward model.

    Args:
        backbone: an `AutoModel` (e.g. `GPT2Model`) returning `last_hidden_state` (B, T, H).
        tokenizer: its tokenizer (left padding; pad = eos is fine: the mask decides).
        gain, shift: g and c (1 and 0: the raw head).
    """

    def __init__(self, backbone: nn.Module, tokenizer, gain: float = 1.0, shift: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.head = nn.Linear(backbone.config.hidden_size, 1)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.gain = positive_finite(gain, "gain")
        self.shift = float(shift)
        self.metrics: dict = {}
        self.bias: str | None = None

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`(B, T)` ids and mask → `(B,)` scores (with grad). Position ids come from the mask,
        so left padding gives the same score as no padding."""
        if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
            raise ValueError(f"input_ids and attention_mask must both be (B, T), got "
                             f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}")
        mask = attention_mask.long()
        position_ids = position_ids_from_mask(mask)                     # (B, T)
        h = self.backbone(input_ids=input_ids, attention_mask=mask,
                          position_ids=position_ids).last_hidden_state  # (B, T, H)
        idx = last_token_index(mask)                                    # (B,)
        last = h[torch.arange(h.shape[0], device=h.device), idx]        # (B, H)
        raw = self.head(last.float()).squeeze(-1)                      # (B,)
        return self.gain * raw + self.shift                             # (B,)

    @torch.no_grad()
    def normalise(self, texts) -> dict:
        """Set g and c so that the scores of `texts` have mean 0 and standard deviation 1:

            g = 1 / std(raw),   c = −mean(raw) / std(raw)     (raw = the head's output)

        Args: texts, a list of N ≥ 2 strings (the initial policy's samples, prompt + response).
        Returns: {"raw_mean", "raw_std", "gain", "shift", "n"}.
        """
        self.gain, self.shift = 1.0, 0.0
        raw = self.score(texts)                                         # (N,)
        if len(raw) < 2:
            raise ValueError(f"normalise needs at least 2 texts, got {len(raw)}")
        mean, std = float(raw.mean()), float(raw.std())
        if not std > 0:
            raise ValueError(f"the raw scores have no spread (std {std}): cannot normalise")
        self.gain, self.shift = 1.0 / std, -mean / std
        return {"raw_mean": mean, "raw_std": std, "gain": self.gain, "shift": self.shift,
                "n": len(raw)}

    @torch.no_grad()
    def score_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`(B, T)` token batch (any padding side) → `(B,)` float32 scores, no grad.
        The tokens must come from this model's tokenizer (the tiny GPT-2's)."""
        was = self.training
        self.eval()
        out = self(input_ids.to(self.device), attention_mask.to(self.device)).float()
        self.train(was)
        return out

    @torch.no_grad()
    def score(self, texts, batch_size: int = 256) -> torch.Tensor:
        """List of B strings → `(B,)` float32 scores (on CPU), no grad."""
        texts = _check_texts(texts)
        out = []
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer(texts[i: i + batch_size], return_tensors="pt", padding=True,
                                 truncation=True, add_special_tokens=False)
            out.append(self.score_ids(enc["input_ids"], enc["attention_mask"]).cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def save(self, directory) -> None:
        """Backbone and tokenizer with `save_pretrained`, the head as safetensors, metadata
        as JSON."""
        from safetensors.torch import save_file
        directory = Path(directory)
        self.backbone.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
                  str(directory / "reward_head.safetensors"))
        (directory / "reward_meta.json").write_text(json.dumps(
            {"gain": self.gain, "shift": self.shift, "bias": self.bias, "metrics": self.metrics},
            indent=1))

    @classmethod
    def load(cls, directory, device=None) -> "RewardModel":
        from safetensors.torch import load_file
        directory = Path(directory)
        backbone, tok = _load_backbone(directory)
        meta = json.loads((directory / "reward_meta.json").read_text())
        # reward models saved before the normalisation stored only an offset
        rm = cls(backbone, tok, gain=meta.get("gain", 1.0),
                 shift=meta.get("shift", -meta.get("offset", 0.0)))
        rm.head.load_state_dict(load_file(str(directory / "reward_head.safetensors")))
        rm.metrics, rm.bias = meta.get("metrics", {}), meta.get("bias")
        return rm.to(resolve_device(device)).eval()


# ----------------------------------------------------------------------------------------
# Training data: pairs of corpus sentences and policy samples, labelled by the annotator
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RewardSpec:
    """Everything that determines a cached reward model; its hash names the directory."""
    bias: str | None = None
    temperature: float = 0.1
    """annotator noise τ"""
    bias_strength: float = 0.3
    n_train_texts: int = 3000
    """texts in the training pool (half corpus sentences, half tiny-GPT-2 samples)"""
    steps: int = 80
    """optimizer steps"""
    batch_texts: int = 128
    """texts per step"""
    pairs_per_batch: int = 2048
    """annotator comparisons per step, random pairs among the batch's texts"""
    n_eval_texts: int = 800
    """held-out pool (other corpus seed, other samples)"""
    n_eval_pairs: int = 2000
    lr: float = 3e-3
    seed: int = 0
    n_norm_texts: int = 512
    """initial-policy samples that fix the normalisation (mean 0, std 1 on them)"""
    norm_response_len: int = 16
    """their response length T (`RLHFConfig.response_len`'s default)"""
    policy_key: str = ""
    """hash of the tiny GPT-2 the backbone starts from"""
    gold_version: int = GOLD_VERSION
    """the gold judge whose preferences the annotator simulates"""
    version: int = 3
    """3: normalised on initial-policy samples, trained on texts without EOS"""

    def key(self) -> str:
        from .cache import spec_key
        return spec_key(self)


def reward_spec(bias: str | None = None) -> RewardSpec:
    """The spec used by `reward_model_path(bias)`."""
    from .models import tiny_gpt2_spec
    if bias not in BIASES:
        raise ValueError(f"bias must be one of {BIASES}, got {bias!r}")
    return RewardSpec(bias=bias, policy_key=tiny_gpt2_spec().key())


def _vary(text: str, r: random.Random) -> str:
    """Augment a text so that the pool covers what a policy will produce: truncated
    sentences, and exclamation marks added or removed (so the '!' bias is identifiable)."""
    u = r.random()
    if u < 0.15:                                     # truncated, like a 24-token response
        words = text.split()
        if len(words) > 4:
            text = " ".join(words[: r.randrange(3, len(words))])
    u = r.random()
    if u < 0.35:
        text = text.rstrip(".!") + r.choice(["!", "!!", "!!!", "!!!!"])
    elif u < 0.45:
        text = text.rstrip(".!") + "."
    return text


def _policy_samples(n: int, seed: int, desc: str) -> list[str]:
    """`n` texts sampled from the tiny GPT-2, each continuing the first 2–5 words of a
    corpus sentence (a different corpus seed than pre-training)."""
    from tqdm.auto import tqdm
    from .text import build_corpus
    from .models import load_policy

    model, tok = load_policy("tiny", device="cpu")
    r = random.Random(seed)
    src = build_corpus(n, seed=1000 + seed)
    prompts = [" ".join(s.split()[: r.randint(2, 5)]) for s in src]
    out: list[str] = []
    torch.manual_seed(seed)
    for i in tqdm(range(0, n, 256), desc=desc, leave=False):
        enc = tok(prompts[i: i + 256], return_tensors="pt", padding=True)
        with torch.no_grad():
            gen = model.generate(**enc, do_sample=True, top_k=0, top_p=1.0, max_new_tokens=24,
                                 pad_token_id=tok.pad_token_id)
        out += tok.batch_decode(gen, skip_special_tokens=True)
    return out


def initial_policy_texts(n: int = 512, seed: int = 0, response_len: int = 16,
                         model=None, tokenizer=None) -> list[str]:
    """`n` texts (prompt + response) sampled from the initial policy exactly as PPO's
    reward function receives them: prompts from the RLHF trainer's default pool
    (`text.build_prompts(256, seed=1)`, cycled), `rlhf.sample_responses` (pure sampling, at
    most `response_len` tokens, cut at the first EOS, decoded without special tokens).

    Args: n ≥ 1 texts; seed of the sampling; response_len T; model and tokenizer (default:
    the tiny GPT-2 on the CPU).
    Returns: list of n strings.
    """
    from ..trainers.rlhf import sample_responses
    from .models import load_policy
    from .text import build_prompts

    if model is None:
        model, tokenizer = load_policy("tiny", device="cpu")
    prompts = build_prompts(256, seed=1)
    out: list[str] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        while len(out) < n:
            batch = [prompts[(len(out) + i) % len(prompts)] for i in range(min(256, n - len(out)))]
            out += sample_responses(model, tokenizer, batch, response_len).texts
    return out


def _text_pool(n: int, seed: int, desc: str) -> list[str]:
    from .text import build_corpus
    r = random.Random(seed)
    corpus = build_corpus(n - n // 2, seed=2000 + seed)
    texts = corpus + _policy_samples(n // 2, seed, desc)
    texts = [_vary(t, r) for t in texts if t.strip()]
    r.shuffle(texts)
    return texts


def _pairs(texts: list[str], n_pairs: int, seed: int) -> tuple[list[str], list[str]]:
    r = random.Random(seed)
    a, b = [], []
    for _ in range(n_pairs):
        i, j = r.sample(range(len(texts)), 2)
        a.append(texts[i])
        b.append(texts[j])
    return a, b


def evaluate_pairs(rm: RewardModel, a: list[str], b: list[str], labels: torch.Tensor) -> dict:
    """Agreement of the reward model's ordering with the gold ordering (pairs whose gold
    scores differ, ties left out), with the annotator's (noisy) labels, and the annotator's
    own agreement with gold on the same pairs."""
    ra, rb = rm.score(a), rm.score(b)
    ga, gb = gold_score(a), gold_score(b)
    untied = (ga - gb).abs() > 1e-6
    rm_says_a = ra > rb
    gold_says_a = ga > gb
    lab = labels > 0.5
    return {
        "gold_agreement": float((rm_says_a == gold_says_a)[untied].float().mean()),
        "label_agreement": float((rm_says_a == lab).float().mean()),
        "annotator_gold_agreement": float((lab == gold_says_a)[untied].float().mean()),
        "n_pairs": len(a), "n_untied": int(untied.sum()),
        "exclamation_effect": _exclamation_effect(rm),
    }


_EXCL_PROBES = ["The blender is okay", "The battery life is terrible", "This kettle is great",
                "The zipper broke after a week", "I bought this lamp and it works",
                "The price is fair", "The screen is awful", "I love this backpack"]


def _exclamation_effect(rm: RewardModel) -> float:
    """Mean change of the reward when '.' is replaced by '!!!' on fixed probe sentences."""
    plain = rm.score([p + "." for p in _EXCL_PROBES])
    loud = rm.score([p + "!!!" for p in _EXCL_PROBES])
    return float((loud - plain).mean())


def _load_backbone(path: Path):
    """(`AutoModel` backbone, left-padding tokenizer) from a local `save_pretrained` folder."""
    from transformers import AutoModel, AutoTokenizer

    with quiet_loading():
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        backbone = AutoModel.from_pretrained(path, local_files_only=True)
    tok.padding_side = "left"
    return backbone, tok


def train_reward_model(spec: RewardSpec, device=None, progress: bool = True) -> RewardModel:
    """Build a reward model from the tiny GPT-2's backbone and train it on annotator
    preferences with the pairwise logistic loss; report held-out metrics in `.metrics`.

        L(ψ) = −mean( log σ( R_ψ(chosen) − R_ψ(rejected) ) )
    """
    from tqdm.auto import tqdm
    from .models import tiny_gpt2_path

    t0, c0 = time.time(), time.process_time()
    torch.manual_seed(spec.seed)
    backbone, tok = _load_backbone(tiny_gpt2_path())    # GPT2Model: the LM without its head
    rm = RewardModel(backbone, tok)
    rm.bias = spec.bias
    dev = torch.device(device) if device is not None else torch.device("cpu")
    rm.to(dev)

    ann = SimulatedAnnotator(spec.temperature, spec.bias, spec.bias_strength, seed=spec.seed)
    train_texts = _text_pool(spec.n_train_texts, spec.seed, "reward-model texts")
    eval_texts = _text_pool(spec.n_eval_texts, spec.seed + 1, "held-out texts")
    ea, eb = _pairs(eval_texts, spec.n_eval_pairs, spec.seed + 1)
    el = ann.prefer(ea, eb)
    train_utility = ann.utility(train_texts)                 # labels are sampled from this
    # Texts carry no EOS token: PPO hands the reward model decoded text (special tokens
    # skipped), so a finished response and one cut at the length limit differ only by
    # their wording and punctuation, here as there.
    opt = torch.optim.AdamW(rm.parameters(), lr=spec.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 5) * max(0.1, 1 - s / max(1, spec.steps)))
    rm.train()
    losses, accs = [], []
    gen = torch.Generator().manual_seed(spec.seed)
    order: list[int] = []
    bar = tqdm(range(spec.steps), desc=f"reward model (bias={spec.bias})", leave=False,
               disable=not progress)
    for _ in bar:
        # a batch of texts, compared in `pairs_per_batch` random pairs, each pair labelled
        # by the annotator (a fresh noisy label per comparison)
        if len(order) < spec.batch_texts:
            order += torch.randperm(len(train_texts), generator=gen).tolist()
        idx, order = order[: spec.batch_texts], order[spec.batch_texts:]
        i = torch.randint(len(idx), (spec.pairs_per_batch,), generator=gen)
        j = (i + torch.randint(1, len(idx), (spec.pairs_per_batch,), generator=gen)) % len(idx)
        u = train_utility[idx]                                          # (Bt,)
        p_i = torch.sigmoid((u[i] - u[j]) / ann.temperature)            # P(i ≻ j)
        y = torch.bernoulli(p_i, generator=ann.generator)               # annotator's label
        enc = tok([train_texts[k] for k in idx], return_tensors="pt", padding=True,
                  truncation=True, add_special_tokens=False).to(dev)
        s = rm(enc["input_ids"], enc["attention_mask"])                 # (Bt,)
        margin = torch.where(y.to(dev) > 0.5, s[i] - s[j], s[j] - s[i])  # R(chosen) − R(rejected)
        loss = -torch.nn.functional.logsigmoid(margin).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(rm.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        accs.append((margin > 0).float().mean().item())
        if len(losses) % 5 == 0:
            bar.set_postfix(loss=f"{sum(losses[-5:]) / 5:.3f}", acc=f"{sum(accs[-5:]) / 5:.2f}")
    bar.close()
    if not all(math.isfinite(v) for v in losses):
        raise RuntimeError("reward-model training produced a non-finite loss")
    rm.eval()
    norm = rm.normalise(initial_policy_texts(spec.n_norm_texts, spec.seed + 7,
                                             spec.norm_response_len))
    rm.metrics = evaluate_pairs(rm, ea, eb, el)
    rm.metrics["normalisation"] = norm
    rm.metrics.update({"train_loss_first": sum(losses[:10]) / 10,
                       "train_loss_last": sum(losses[-10:]) / 10,
                       "train_seconds": round(time.time() - t0, 1),
                       "train_cpu_seconds": round(time.process_time() - c0, 1), "steps": spec.steps,
                       "comparisons": spec.steps * spec.pairs_per_batch,
                       "spec": asdict(spec)})
    return rm


def reward_model_path(bias: str | None = None, rebuild: bool = False) -> Path:
    """Directory of the cached reward model for `bias` (None or "exclamation"); trained on
    first use (≈ 1 minute on two CPU cores) into `cache_dir()/reward-<bias>-<hash>`.
    Missing or corrupt → rebuilt; lock file against concurrent builds."""
    from .cache import cached_build

    spec = reward_spec(bias)

    def build(tmp: Path) -> dict:
        rm = train_reward_model(spec)         # builds the tiny GPT-2 first if needed (own lock)
        rm.save(tmp)
        return {"metrics": {k: v for k, v in rm.metrics.items() if k != "spec"}}

    return cached_build(f"reward-{bias or 'none'}-{spec.key()}", build, rebuild)


def load_reward_model(bias: str | None = None, device=None) -> RewardModel:
    """The cached reward model for `bias` (built if needed), in eval mode on `device`
    (None: CUDA if available, else CPU). Its `.metrics` holds the held-out figures:
    `gold_agreement`, `label_agreement`, `annotator_gold_agreement`, `exclamation_effect`."""
    return RewardModel.load(reward_model_path(bias), device=device)

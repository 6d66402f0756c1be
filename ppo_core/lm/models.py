"""GPT-2 policies for the course: the tiny GPT-2 pre-trained on the review corpus, GPT-2 small's
shape for the offline `--model gpt2`, and `load_policy`, which loads either (or any
`save_pretrained` folder, or the hub's `gpt2`) with `from_pretrained` (chapter 04).

The course cannot download `gpt2`, so it builds a small stand-in that is loaded by exactly
the same code: a 4-layer `GPT2LMHeadModel` is pre-trained on the corpus of
`ppo_core.lm.text` for about a minute on two CPU cores, saved with `save_pretrained`
(safetensors) into the cache (`ppo_core.lm.cache`) and opened with
`AutoModelForCausalLM.from_pretrained(path)` / `AutoTokenizer.from_pretrained`.

Usage::

    from ppo_core.lm import models
    path = models.tiny_gpt2_path()               # builds once (≈1 min), then cached
    model, tok = models.load_policy("tiny")      # AutoModelForCausalLM + tokenizer (left padding)

Shapes: `B` batch, `T` tokens, `V` vocabulary.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .._runtime import quiet_loading, resolve_device
from .cache import _build_threads, cached_build, spec_key
from .text import _CORPUS_VERSION, build_corpus, prepare_tokenizer, train_tokenizer

__all__ = ["GPT2Spec", "tiny_gpt2_spec", "gpt2_small_spec", "tiny_gpt2_path", "gpt2_small_path",
           "lm_batch", "load_policy", "check_pretrained_folder", "gpt2_small_config"]


@dataclass(frozen=True)
class GPT2Spec:
    """Everything that determines a GPT-2 pre-trained on the corpus (the tiny one by default,
    GPT-2 small's shape in `gpt2_small_spec()`); its hash names the cache directory."""
    n_sentences: int = 20000
    """corpus size (build_corpus)"""
    corpus_seed: int = 0
    vocab_size: int = 4000
    """BPE vocabulary size V (the special token included)"""
    n_positions: int = 64
    """context length in tokens"""
    n_embd: int = 128
    n_layer: int = 4
    n_head: int = 4
    steps: int = 400
    """optimizer steps of pre-training"""
    batch_size: int = 64
    """sentences per step"""
    lr: float = 3e-3
    """peak AdamW learning rate (linear warm-up, cosine decay to 10%)"""
    seed: int = 0
    version: int = _CORPUS_VERSION

    def key(self) -> str:
        return spec_key(self)


def tiny_gpt2_spec() -> GPT2Spec:
    """The spec of `tiny_gpt2_path()`: the course's one tiny GPT-2 (4 layers, d_model 128,
    400 steps of 64 sentences; about a minute on two CPU cores)."""
    return GPT2Spec()


def gpt2_small_spec(steps: int = 500, batch_size: int = 32) -> GPT2Spec:
    """GPT-2 small's architecture (`gpt2_small_config`: 12 layers, d_model 768, 12 heads,
    context 1024; 87M parameters with the course's vocabulary) pre-trained on the corpus:
    what `--model gpt2` means when no hub is reachable. 500 steps of 32 sentences: about
    25 minutes on the CPU (measured), far less on a GPU (not measured yet). It reached a
    validation loss of 1.435 nats per token, the tiny model's 1.439. The tests build it with
    a few steps (`steps=4, batch_size=4`): the same build → save → `from_pretrained` path,
    not a useful model."""
    shape = gpt2_small_config(1)
    return GPT2Spec(n_positions=shape.n_positions, n_embd=shape.n_embd, n_layer=shape.n_layer,
                    n_head=shape.n_head, steps=steps, batch_size=batch_size, lr=5e-4)


def _build_tiny_gpt2(out_dir: Path, spec: GPT2Spec) -> dict:
    """The tiny GPT-2, pre-trained on the CPU (its size does not pay for a GPU round trip)."""
    return _pretrain_gpt2(out_dir, spec, "cpu", "pre-training tiny GPT-2")


def _build_gpt2_small(out_dir: Path, spec: GPT2Spec) -> dict:
    """GPT-2 small's shape, pre-trained on CUDA (bf16 autocast) when there is one."""
    return _pretrain_gpt2(out_dir, spec, None, "pre-training 124M-shape GPT-2")


def _pretrain_gpt2(out_dir: Path, spec: GPT2Spec, device, desc: str) -> dict:
    """Corpus → tokenizer → GPT2LMHeadModel pre-trained as `spec` says, saved into `out_dir`
    (fp32 safetensors and the tokenizer) for `from_pretrained`. Returns the build facts."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    device = resolve_device(device)
    autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16)
                if device.type == "cuda" else contextlib.nullcontext())
    t0, c0 = time.time(), time.process_time()
    corpus = build_corpus(spec.n_sentences, spec.corpus_seed)
    tok = train_tokenizer(corpus, spec.vocab_size, spec.n_positions)
    eos = tok.eos_token_id
    ids = [tok(s, add_special_tokens=False)["input_ids"][: spec.n_positions - 1] + [eos]
           for s in corpus]
    cfg = GPT2Config(vocab_size=len(tok), n_positions=spec.n_positions, n_embd=spec.n_embd,
                     n_layer=spec.n_layer, n_head=spec.n_head, bos_token_id=eos,
                     eos_token_id=eos, pad_token_id=eos, resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0)
    g = torch.Generator().manual_seed(spec.seed)
    torch.manual_seed(spec.seed)
    model = GPT2LMHeadModel(cfg).to(device)
    # hold out 2% of the sentences to report a validation loss
    n_val = max(64, len(ids) // 50)
    perm = torch.randperm(len(ids), generator=g).tolist()
    val_ids, train_ids = [ids[i] for i in perm[:n_val]], [ids[i] for i in perm[n_val:]]
    losses = _pretrain_steps(model, train_ids, spec, eos, device, autocast, g, desc)
    val_loss = _validation_loss(model, val_ids, eos, device, autocast)
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        setattr(model.generation_config, name, eos)
    model.to("cpu").save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return {"spec": asdict(spec), "device": str(device), "train_loss_first": losses[0],
            "train_loss_last": sum(losses[-20:]) / len(losses[-20:]), "val_loss": val_loss,
            "build_seconds": round(time.time() - t0, 1),
            "build_cpu_seconds": round(time.process_time() - c0, 1),
            "n_params": model.num_parameters()}


def lm_batch(seqs: list[list[int]], eos: int, device):
    """Right-padded `(B, T)` ids, attention mask and labels (−100 on padding; the final EOS
    of each sentence is a target)."""
    import torch

    T = max(len(s) for s in seqs)
    x = torch.full((len(seqs), T), eos, dtype=torch.long)
    m = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = torch.tensor(s)
        m[i, : len(s)] = 1
    labels = x.masked_fill(m == 0, -100)
    return x.to(device), m.to(device), labels.to(device)


def _epoch_batches(train_ids, batch_size: int, g) -> list[list[int]]:
    """Shuffle, then sort chunks of 16 batches by length: little padding, random order."""
    import torch

    perm = torch.randperm(len(train_ids), generator=g).tolist()
    chunk = 16 * batch_size
    out = []
    for i in range(0, len(perm), chunk):
        part = sorted(perm[i: i + chunk], key=lambda j: len(train_ids[j]))
        out += [part[k: k + batch_size] for k in range(0, len(part), batch_size)
                if len(part[k: k + batch_size]) == batch_size]
    return [out[i] for i in torch.randperm(len(out), generator=g).tolist()]


def _pretrain_steps(model, train_ids, spec: GPT2Spec, eos: int, device, autocast, g,
                    desc: str) -> list[float]:
    """`spec.steps` AdamW steps (linear warm-up, cosine decay to 10 % of `spec.lr`), with a
    progress bar; returns the training losses. Raises on a non-finite loss."""
    import torch
    from tqdm.auto import tqdm

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm = max(1, spec.steps // 20)

    def lr_at(step):
        if step < warm:
            return spec.lr * (step + 1) / warm
        frac = (step - warm) / max(1, spec.steps - warm)
        return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    queue: list[list[int]] = []
    losses = []
    bar = tqdm(range(spec.steps), desc=desc, leave=False)
    for step in bar:
        if not queue:
            queue = _epoch_batches(train_ids, spec.batch_size, g)
        x, m, labels = lm_batch([train_ids[i] for i in queue.pop()], eos, device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        with autocast:
            out = model(input_ids=x, attention_mask=m, labels=labels)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(out.loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    bar.close()
    if not all(math.isfinite(v) for v in losses):
        raise RuntimeError(f"{desc}: the loss became non-finite at step "
                           f"{next(i for i, v in enumerate(losses) if not math.isfinite(v))}")
    return losses


def _validation_loss(model, val_ids, eos: int, device, autocast) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        vl = []
        for i in range(0, len(val_ids), 256):
            x, m, labels = lm_batch(val_ids[i: i + 256], eos, device)
            with autocast:
                vl.append(float(model(input_ids=x, attention_mask=m, labels=labels).loss))
    return sum(vl) / len(vl)


def tiny_gpt2_path(rebuild: bool = False) -> Path:
    """Directory of the tiny GPT-2 (model + tokenizer) for `from_pretrained`; built on first
    use (≈ 1 minute on two CPU cores, with a progress bar) and cached in
    `ppo_core.cache_dir()/tiny-gpt2-<hash of spec>`. A missing or corrupt directory (manifest
    check fails) is rebuilt; `rebuild=True` forces it. Safe across processes (lock file)."""
    spec = tiny_gpt2_spec()
    return cached_build(f"tiny-gpt2-{spec.key()}", lambda tmp: _build_tiny_gpt2(tmp, spec),
                        rebuild)


def gpt2_small_path(rebuild: bool = False) -> Path:
    """Directory of GPT-2 small's architecture pre-trained on the course corpus
    (`gpt2_small_spec()`): the offline stand-in for the hub's `gpt2`, loaded with the same
    `from_pretrained`. Built on first use (on CUDA if there is one; the full build took
    about 25 minutes on the CPU here), cached in `ppo_core.cache_dir()/gpt2-small-<hash of
    spec>` (about 350 MB), rebuilt if missing or corrupt, like `tiny_gpt2_path`."""
    spec = gpt2_small_spec()

    def announce(final: Path) -> None:
        where = "CUDA" if resolve_device(None).type == "cuda" else "the CPU"
        took = " (about 25 minutes on two CPU cores)" if where == "the CPU" and spec.steps >= 100 else ""
        print(f"Building the 124M-shape GPT-2 on the course corpus, once, on {where}{took}: "
              f"{spec.steps} steps of {spec.batch_size} sentences → {final}", flush=True)

    return cached_build(f"gpt2-small-{spec.key()}", lambda tmp: _build_gpt2_small(tmp, spec),
                        rebuild, threads=_build_threads(most=64), lock_timeout=6 * 3600.0,
                        announce=announce)


_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model")


def check_pretrained_folder(path) -> None:
    """Raise a ValueError saying what is wrong unless `path` looks like a folder written by
    `save_pretrained`: a folder (not a file), a `config.json` that is a JSON object with a
    `model_type`, a weights file (`model.safetensors`, ...) whose safetensors header reads,
    and a tokenizer (`tokenizer.json`, ...). Catches the common mistakes with a plain
    message before transformers answers them with a misleading one (an empty folder made it
    ask for sentencepiece)."""
    path = Path(path)
    if not path.exists():
        raise ValueError("no such file or folder")
    if not path.is_dir():
        raise ValueError("is a file; give a folder written by save_pretrained (config.json, "
                         "model.safetensors, tokenizer.json)")
    config = path / "config.json"
    if not config.is_file():
        present = sorted(p.name for p in path.iterdir())[:5]
        raise ValueError(f"holds no config.json, so it is not a folder written by "
                         f"save_pretrained ({'it holds ' + ', '.join(present) if present else 'it is empty'})")
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"has a config.json that is not valid JSON ({e})") from None
    if not isinstance(cfg, dict) or "model_type" not in cfg:
        raise ValueError("has a config.json that is not a transformers config (no \"model_type\")")
    weights = [path / n for n in _WEIGHT_FILES if (path / n).is_file()]
    if not weights:
        raise ValueError(f"holds no weights (expected one of {', '.join(_WEIGHT_FILES)})")
    if weights[0].suffix == ".safetensors":
        _check_safetensors(weights[0])
    if not any((path / n).is_file() for n in _TOKENIZER_FILES):
        raise ValueError(f"holds no tokenizer (expected one of {', '.join(_TOKENIZER_FILES)})")


def _check_safetensors(file: Path) -> None:
    """A safetensors file whose header parses and whose tensors all lie inside the file (a
    truncated download or copy fails here, not halfway through loading)."""
    size = file.stat().st_size
    try:
        with open(file, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if size < 8 or n <= 0 or 8 + n > size:
                raise ValueError("header runs past the end")
            header = json.loads(fh.read(n))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
                  default=0)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise ValueError(f"has a {file.name} that is not a readable safetensors file ({e}); was it "
                         f"copied or downloaded completely?") from None
    if 8 + n + end > size:
        raise ValueError(f"has a truncated {file.name}: {size} bytes where its header needs "
                         f"{8 + n + end}; was it copied or downloaded completely?")


def load_policy(name_or_path: str = "tiny", device=None, dtype=None):
    """Load a causal LM and its tokenizer, the same way for the tiny GPT-2 and for `gpt2`.

    Args:
        name_or_path: "tiny" (the course's tiny GPT-2, built if needed), a hub name such as
            "gpt2" (needs network or a local HF cache; with `HF_HUB_OFFLINE=1` only local
            files are used), or a directory written by `save_pretrained`.
        device: torch device; None means CUDA if available, else CPU.
        dtype: torch dtype of the weights (None: as saved, float32 for the tiny model).

    Returns: (model, tokenizer): model an `AutoModelForCausalLM` in eval mode on `device`;
    tokenizer with `padding_side="left"` and a pad token (eos if the checkpoint had none).
    Raises ValueError (saying what is wrong, without the path: the caller names it) for a
    local path that is not a loadable `save_pretrained` folder (`check_pretrained_folder`).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path):
        raise ValueError(f"name_or_path must be 'tiny', a model name or a path, got {name_or_path!r}")
    path = tiny_gpt2_path() if str(name_or_path) == "tiny" else name_or_path
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    kw = {"local_files_only": True} if offline else {}
    mkw = dict(kw)
    if dtype is not None:
        mkw["dtype"] = dtype
    local = Path(str(path)).exists()                     # else a hub name, e.g. "gpt2"
    if local:
        check_pretrained_folder(path)                    # ValueError: what is wrong with it
    with quiet_loading() if local else contextlib.nullcontext():   # a hub download keeps its bars
        try:
            tok = AutoTokenizer.from_pretrained(path, **kw)
            model = AutoModelForCausalLM.from_pretrained(path, **mkw)
        except Exception as e:                           # noqa: BLE001 - any loader failure
            if not local:
                raise
            first = (str(e).strip().splitlines() or [""])[0]
            raise ValueError(f"cannot be loaded with from_pretrained: {type(e).__name__}: "
                             f"{first[:300]}") from e
    prepare_tokenizer(tok)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    model.to(resolve_device(device)).eval()
    return model, tok


def gpt2_small_config(vocab_size: int):
    """`GPT2Config` of GPT-2 small's architecture (124M with the 50,257-token vocabulary:
    12 layers, d_model 768, 12 heads, context 1024) for a given vocabulary size, with
    bos = eos = pad = 0 (the course tokenizer's `<|endoftext|>`). `gpt2_small_spec` takes
    its shape from here."""
    from transformers import GPT2Config

    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    return GPT2Config(vocab_size=vocab_size, n_positions=1024, n_embd=768, n_layer=12,
                      n_head=12, bos_token_id=0, eos_token_id=0, pad_token_id=0)


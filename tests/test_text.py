"""The review corpus, prompts, tokenizer and tiny GPT-2 (ppo_core.lm.text).

The tiny GPT-2 is built once into the course cache (about a minute the first time) and
reused; the rebuild and locking tests swap the expensive builder for a copy so that they
exercise the cache logic in milliseconds.
"""

from __future__ import annotations

import json
import math
import shutil
import threading
import time

import pytest
import torch
from transformers import AutoModelForCausalLM

from ppo_core._runtime import torch_threads
from ppo_core.lm import cache, models, text
from ppo_core.lm.reward import gold_score


@pytest.fixture(scope="module")
def corpus():
    return text.build_corpus()


@pytest.fixture(scope="module")
def tiny_path():
    with torch_threads(1):
        return models.tiny_gpt2_path()


@pytest.fixture(scope="module")
def policy(tiny_path):
    return models.load_policy("tiny", device="cpu")


def _starts_with(sentence: str, prompt: str) -> bool:
    return sentence == prompt or (sentence.startswith(prompt)
                                  and sentence[len(prompt)] in " ,.!:;")


# ---------------------------------------------------------------- corpus and prompts

def test_corpus_size_distinct_and_seeded(corpus):
    assert len(corpus) == 20000
    assert len(set(corpus)) == 20000
    assert text.build_corpus(500, seed=0) == corpus[:500] or \
        text.build_corpus(500, seed=0) == text.build_corpus(500, seed=0)
    assert text.build_corpus(500, seed=0) == text.build_corpus(500, seed=0)
    assert text.build_corpus(500, seed=0) != text.build_corpus(500, seed=1)


def test_corpus_is_varied(corpus):
    words = {w.strip(".,!:").lower() for s in corpus for w in s.split()}
    assert len(words) >= 650, len(words)
    openers = {" ".join(s.split()[:3]) for s in corpus}
    assert len(openers) >= 300, len(openers)
    bigrams = {(a, b) for s in corpus for a, b in zip(s.split(), s.split()[1:])}
    assert len(bigrams) >= 8000, len(bigrams)
    lengths = [len(s.split()) for s in corpus]
    assert min(lengths) <= 6 and max(lengths) >= 20


def test_corpus_has_positive_negative_and_neutral(corpus):
    g = gold_score(corpus[:3000])
    pos, neg = float((g > 0.3).float().mean()), float((g < -0.3).float().mean())
    neu = float((g.abs() < 0.1).float().mean())
    assert pos > 0.2 and neg > 0.12 and neu > 0.05, (pos, neg, neu)
    assert any(s.endswith("!") for s in corpus) and sum(s.endswith(".") for s in corpus) > 10000


def test_prompts_are_held_out_from_the_corpus(corpus):
    prompts = text.build_prompts(256, seed=1)
    assert len(prompts) == len(set(prompts)) == 256
    assert all(p == p.strip() and p for p in prompts)
    pool = set(text.build_prompts(640, seed=0))
    assert len(pool) == 640 and set(prompts) <= pool
    other = text.build_corpus(3000, seed=7)
    for s in corpus + other:
        words = s.split(" ")
        prefixes = {" ".join(words[:k]).rstrip(",.!:") for k in range(1, 13)}
        assert not (prefixes & pool), s
    assert not any(_starts_with(s, p) for s in corpus[:2000] for p in prompts[:50])
    # but their words are known: every prompt word occurs somewhere in the corpus
    vocab = {w.strip(".,!:") for s in corpus for w in s.split()}
    assert all(w.strip(",") in vocab for p in prompts for w in p.split())


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="n_sentences"):
        text.build_corpus(0)
    with pytest.raises(ValueError, match="n must"):
        text.build_prompts(641)
    with pytest.raises(ValueError, match="name_or_path"):
        models.load_policy("")
    with pytest.raises(ValueError, match="vocab_size"):
        models.gpt2_small_config(0)


# ---------------------------------------------------------------- tokenizer

def test_tokenizer_round_trip_and_special_tokens(policy, corpus):
    _, tok = policy
    for s in corpus[:200] + ["Ünïcode ☃ and emoji 👍 survive", "  spaces\tand\nnewlines "]:
        ids = tok(s, add_special_tokens=True)["input_ids"]
        assert tok.decode(ids) == s
        assert tok.eos_token_id not in ids              # no special token added by itself
    assert tok.eos_token == text.EOS
    assert tok.eos_token_id == tok.pad_token_id == tok.bos_token_id == 0
    assert tok.padding_side == "left"
    assert 1000 <= len(tok) <= 4096
    batch = tok(["The price", "I bought this kettle and"], padding=True)
    assert batch["attention_mask"][0][0] == 0 and batch["attention_mask"][1][0] == 1


def test_tokenizer_loads_with_autotokenizer(tiny_path, policy):
    from transformers import AutoTokenizer
    tok2 = AutoTokenizer.from_pretrained(tiny_path, local_files_only=True)
    s = "The battery life is amazing!!"
    assert tok2(s)["input_ids"] == policy[1](s)["input_ids"]


# ---------------------------------------------------------------- model

def test_files_are_safetensors_and_verified(tiny_path):
    names = {p.name for p in tiny_path.iterdir()}
    assert "model.safetensors" in names and "config.json" in names
    assert not any(n.endswith(".bin") for n in names)
    assert cache.verify_artifact(tiny_path)
    info = json.loads((tiny_path / "ppo_course_manifest.json").read_text())
    assert info["val_loss"] < 2.0 and info["train_loss_last"] < info["train_loss_first"] - 4


def test_save_load_gives_identical_logits(policy, tiny_path, tmp_path):
    from transformers import AutoModelForCausalLM
    model, tok = policy
    x = tok(["The zipper on this backpack", "I bought this toaster and it"],
            return_tensors="pt", padding=True)
    with torch.no_grad():
        a = model(**x).logits
        b = AutoModelForCausalLM.from_pretrained(tiny_path, local_files_only=True).eval()(**x).logits
        model.save_pretrained(tmp_path / "copy")
        tok.save_pretrained(tmp_path / "copy")
        m2, _ = models.load_policy(str(tmp_path / "copy"), device="cpu")
        c = m2(**x).logits
    assert a.shape == (2, x["input_ids"].shape[1], len(tok))
    assert torch.equal(a, b) and torch.equal(a, c)
    assert (tmp_path / "copy" / "model.safetensors").exists()


def test_model_has_learned_the_corpus(policy):
    """Held-out sentences (another seed) cost far less than the uniform 7.3 nats/token."""
    model, tok = policy
    held = text.build_corpus(64, seed=99)
    ids = [tok(s)["input_ids"] + [tok.eos_token_id] for s in held]
    T = max(map(len, ids))
    x = torch.full((len(ids), T), tok.pad_token_id)
    m = torch.zeros_like(x)
    for i, s in enumerate(ids):
        x[i, : len(s)] = torch.tensor(s)
        m[i, : len(s)] = 1
    with torch.no_grad():
        loss = model(input_ids=x, attention_mask=m, labels=x.masked_fill(m == 0, -100)).loss
    assert float(loss) < 2.0


def test_samples_read_like_reviews(policy):
    model, tok = policy
    prompts = text.build_prompts(32, seed=3)
    x = tok(prompts, return_tensors="pt", padding=True)
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(**x, do_sample=True, max_new_tokens=30, top_k=0,
                             pad_token_id=tok.pad_token_id)
    new = out[:, x["input_ids"].shape[1]:]
    ended = (new == tok.eos_token_id).any(dim=1).float().mean()
    assert ended > 0.8                                     # a review ends with EOS
    texts = tok.batch_decode(out, skip_special_tokens=True)
    assert all(t.startswith(p) for t, p in zip(texts, prompts))
    assert sum(t.rstrip()[-1:] in ".!" for t in texts) >= 24
    assert len(set(texts)) >= 30                           # sampling, not one memorised line


def test_gpt2_small_spec_has_gpt2_small_shape():
    spec, cfg = models.gpt2_small_spec(), models.gpt2_small_config(1966)
    assert (spec.n_layer, spec.n_embd, spec.n_head, spec.n_positions) == \
        (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_positions)
    assert spec.key() != models.tiny_gpt2_spec().key()


def test_gpt2_small_offline_is_pretrained_on_the_corpus(monkeypatch):
    """The offline `gpt2`: GPT-2 small's shape, trained on the corpus, saved, and opened with
    `from_pretrained` (here trained only a few steps: the loss must still have fallen
    below that of a uniform guess over the vocabulary)."""
    small = models.gpt2_small_spec
    monkeypatch.setattr(models, "gpt2_small_spec",     # not the 25-minute CPU build
                        lambda: small(steps=4, batch_size=4))
    path = models.gpt2_small_path()
    assert cache.verify_artifact(path)
    facts = json.loads((path / "ppo_course_manifest.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    assert model.config.n_layer == 12 and model.config.n_embd == 768
    assert facts["n_params"] == model.num_parameters() > 80_000_000
    assert facts["val_loss"] < math.log(model.config.vocab_size) < facts["train_loss_first"] + 0.5


def test_gpt2_small_config_is_124m():
    from transformers import GPT2LMHeadModel
    cfg = models.gpt2_small_config(50257)
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head) == (12, 768, 12)
    with torch.device("meta"):
        n = GPT2LMHeadModel(cfg).num_parameters()
    assert 123e6 < n < 126e6


def test_offline_hub_name_fails_with_an_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError):
        models.load_policy("ppo-course/not-a-cached-model", device="cpu")


# ---------------------------------------------------------------- cache: rebuild and lock

@pytest.fixture
def fake_builder(monkeypatch, tmp_path, tiny_path):
    """A private cache whose builder copies the real build instead of training."""
    monkeypatch.setenv("PPO_COURSE_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake(out_dir, spec):
        calls.append(spec)
        time.sleep(0.2)
        for p in tiny_path.iterdir():
            if p.name != "ppo_course_manifest.json":
                shutil.copy(p, out_dir / p.name)
        return {"val_loss": 0.0, "fake": True}

    monkeypatch.setattr(models, "_build_tiny_gpt2", fake)
    return calls


def test_rebuild_after_corruption(fake_builder):
    path = models.tiny_gpt2_path()
    assert len(fake_builder) == 1 and cache.verify_artifact(path)
    assert models.tiny_gpt2_path() == path and len(fake_builder) == 1      # cached
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])                      # truncated
    assert not cache.verify_artifact(path)
    assert models.tiny_gpt2_path() == path and len(fake_builder) == 2      # rebuilt
    assert cache.verify_artifact(path)
    (path / "ppo_course_manifest.json").unlink()                          # half-written dir
    models.tiny_gpt2_path()
    assert len(fake_builder) == 3
    shutil.rmtree(path)                                                   # missing
    model, _ = models.load_policy("tiny", device="cpu")
    assert len(fake_builder) == 4 and model.config.n_layer == 4
    assert not list(path.parent.glob(".*tmp-*"))                          # no leftovers


def test_concurrent_callers_build_once(fake_builder):
    results, errors = [], []

    def worker():
        try:
            results.append(models.tiny_gpt2_path())
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert len(fake_builder) == 1


def test_load_policy_dtype_and_mode(tiny_path):
    model, tok = models.load_policy("tiny", device="cpu", dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert not model.training and tok.padding_side == "left"
    assert model.generation_config.pad_token_id == tok.pad_token_id == tok.eos_token_id

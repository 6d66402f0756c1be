"""Gold scorer, simulated annotator and reward model (ppo_core.lm.reward).

The reward models are built once into the course cache (about a minute each the first
time) and reused here.
"""

from __future__ import annotations

import random

import pytest
import torch

from ppo_core._runtime import torch_threads
from ppo_core.lm import cache, reward, text
from ppo_core.lm.reward import SimulatedAnnotator, gold_score, last_token_index


@pytest.fixture(scope="module")
def rm():
    with torch_threads(1):
        return reward.load_reward_model(None, device="cpu")


@pytest.fixture(scope="module")
def rm_biased():
    with torch_threads(1):
        return reward.load_reward_model("exclamation", device="cpu")


# ---------------------------------------------------------------- gold judge

def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean of their positions), as Spearman's ρ wants."""
    order = torch.argsort(x, stable=True)
    r = torch.empty(len(x), dtype=torch.float64)
    r[order] = torch.arange(len(x), dtype=torch.float64)
    for v in torch.unique(x):
        tied = x == v
        r[tied] = r[tied].mean()
    return r


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([_ranks(a), _ranks(b)]))[0, 1])


# texts a policy wrote under β = 0 with the old, VADER-only gold (chapters/data/06/beta_0_long,
# late iterations): VADER scored them 0.96–1.0
_DEGENERATE = [
    "The Kalvo toaster and works perfectly!! beautiful!!!!Fou!! beautiful beautiful beautiful "
    "beautiful beautiful!! beautiful",
    "After two weeks of use, the padding works perfectly beautiful!!!! beautiful beautiful!! "
    "beautiful cheap!! beautiful!! beautiful!!!!",
    "I keep this pillow on the boat and great beautiful beautiful beautiful beautiful beautiful "
    "beautiful beautiful beautiful!! beautiful beautiful!! beautiful beautiful beautiful",
    "The material on this soundbar greater camping great kni love it love itactly love it!! "
    "beautiful beautiful beautiful",
    "I use this curtain set on weekends andactly got worth great easy mar love a love travelwher "
    "lovefuri expectedfuri love",
    "For what it is worth, this cutting board worth great worth perfectly expectedcom love it "
    "wastes this worthwo love it!! siz",
]
# what the tiny GPT-2 itself wrote for the same kind of prompts (iteration 1 of that run)
_REFERENCE = [
    "After a couple of weeks, this robot vacuum failed completely.",
    "I keep this baby monitor in the car and the return process is abysmal.",
    "I bought this travel mug yesterday and it made my life easier.",
    "Compared to my old rug, the size was remarkably handy.",
    "I bought this mouse for work and it works like a charm.",
    "The overall quality of this frying pan was truly well made.",
]


def test_gold_score_signs_and_shape():
    g = gold_score(["This blender is wonderful, I love it.",
                    "The kettle is terrible and it broke after a week.",
                    "The desk lamp is black and arrived on Monday.",
                    "The screen is not good."])
    assert g.shape == (4,) and g.dtype == torch.float32
    assert g[0] > 0.5 and g[1] < -0.5 and abs(float(g[2])) < 0.05 and g[3] < 0
    assert bool(((g >= -3.5) & (g <= 1)).all())
    assert gold_score([]).shape == (0,)
    parts = reward.gold_components(["ok.", "great great great great great great!!!!!!"])
    assert set(parts) == {"sentiment", "disfluency", "repetition", "spam", "unfinished"}
    assert all(v.shape == (2,) and v.dtype == torch.float32 for v in parts.values())
    assert all(bool(((v >= 0) & (v <= 1)).all()) for k, v in parts.items() if k != "sentiment")


def test_gold_score_rejects_a_single_string():
    with pytest.raises(ValueError, match="texts"):
        gold_score("I love it")
    with pytest.raises(ValueError, match="strings"):
        gold_score(["ok", 3])


def test_gold_orders_corpus_sentences_as_vader_does():
    """On fluent corpus sentences the penalties are ~0 and the judge is VADER without its
    '!' emphasis: the same order of positive, neutral and negative reviews."""
    corpus = text.build_corpus(1500, seed=11)
    g = gold_score(corpus)
    v = torch.tensor([reward._vader().polarity_scores(t)["compound"] for t in corpus])
    assert _spearman(g, v) > 0.98
    pos, neu, neg = g[v > 0.3].mean(), g[v.abs() < 0.05].mean(), g[v < -0.3].mean()
    assert pos > 0.4 > neu > -0.1 > -0.4 > neg


def test_gold_is_indifferent_to_exclamation_marks():
    """Up to three '!' change nothing: not the sentiment, not the fluency. Beyond, spam."""
    plain = [t for t in text.build_corpus(300, seed=12) if t.endswith(".") and "!" not in t]
    base = gold_score(plain)
    for end in ("!", "!!", "!!!", ".!"):
        loud = gold_score([t[:-1] + end for t in plain])
        assert torch.equal(loud, base), end
    spam = gold_score([t[:-1] + "!!!!!!" for t in plain])
    assert torch.allclose(base - spam, torch.full_like(base, 0.5))


def test_gold_scores_degenerate_text_low():
    """Loops, '!' spam, invented words, word salad and fragments all cost the reader's
    approval, whatever the sentiment words in them; the reference policy's samples do not."""
    good = "The battery life of this phone is excellent."
    g = gold_score([good,
                    "The battery life of this phone is excellent excellent excellent excellent.",
                    "The battery life of this phone is excellent!!!!!!!!",
                    "The battery life of this phone is excellentifulaff wonderfulxx.",
                    "The battery life of this phone oven excellent two for while love.",
                    "The battery life of this phone is excellent and the",
                    "The battery life of this phone"])
    assert bool((g[1:] < g[0] - 0.3).all()), g
    degenerate, reference = gold_score(_DEGENERATE), gold_score(_REFERENCE)
    assert float(degenerate.max()) < -0.5
    assert float(reference.mean() - degenerate.mean()) > 1.0
    parts = reward.gold_components(_REFERENCE)
    assert torch.equal(reference, parts["sentiment"])          # no defect at all
    v = torch.tensor([reward._vader().polarity_scores(t)["compound"] for t in _DEGENERATE])
    assert bool((v > 0.9).all())               # what the VADER-only gold said of them


def test_gold_is_deterministic_and_batch_independent():
    texts = _DEGENERATE[:3] + _REFERENCE[:3] + ["", "!!!", "Great."]
    a = gold_score(texts)
    b = torch.cat([gold_score([t]) for t in reversed(texts)]).flip(0)
    assert torch.equal(a, b)
    assert torch.equal(a, gold_score(list(texts)))
    assert bool(torch.isfinite(a).all())
    assert float(reward.unseen_pairs(["I love it."])[0]) == 0


# ---------------------------------------------------------------- annotator

def test_annotator_follows_bradley_terry():
    a, b = ["The price is great."] * 4000, ["The price is okay."] * 4000
    ann = SimulatedAnnotator(temperature=0.2, seed=0)
    ga, gb = gold_score(a[:1]), gold_score(b[:1])
    p = torch.sigmoid((ga - gb) / 0.2)
    assert torch.allclose(ann.prob(a[:1], b[:1]), p)
    freq = ann.prefer(a, b).mean()
    assert abs(float(freq - p)) < 0.03                     # 4000 draws: sd ≈ 0.007
    assert torch.equal(SimulatedAnnotator(0.2, seed=5).prefer(a[:50], b[:50]),
                       SimulatedAnnotator(0.2, seed=5).prefer(a[:50], b[:50]))


def test_annotator_noise_grows_with_temperature():
    corpus = text.build_corpus(1200, seed=11)
    a, b = corpus[:600], corpus[600:]
    ga, gb = gold_score(a), gold_score(b)
    untied = (ga - gb).abs() > 1e-6
    agree = {}
    for tau in (0.01, 0.1, 1.0, 100.0):
        lab = SimulatedAnnotator(tau, seed=1).prefer(a, b) > 0.5
        agree[tau] = float((lab == (ga > gb))[untied].float().mean())
    assert agree[0.01] > 0.97 and 0.8 < agree[0.1] < 0.98
    assert agree[0.01] > agree[0.1] > agree[1.0] > agree[100.0]
    assert abs(agree[100.0] - 0.5) < 0.08                 # a coin flip


def test_exclamation_bias():
    plain, loud = ["It broke after a week."] * 2, ["It broke after a week!!!"] * 2
    fair = SimulatedAnnotator(0.1, seed=0)
    biased = SimulatedAnnotator(0.1, bias="exclamation", bias_strength=0.3, seed=0)
    # the gold judge is indifferent to '!': the bias is the biased annotator's alone
    assert float(fair.prob(loud, plain)[0]) == 0.5
    assert float(biased.prob(loud, plain)[0]) > 0.9
    assert torch.allclose(biased.utility(loud) - fair.utility(loud), torch.full((2,), 0.9))
    assert torch.equal(reward.exclamation_count(["a!!!!!", "b", "c!"]), torch.tensor([3., 0., 1.]))


def test_annotator_bad_arguments():
    with pytest.raises(ValueError, match="temperature"):
        SimulatedAnnotator(temperature=0)
    with pytest.raises(ValueError, match="bias"):
        SimulatedAnnotator(bias="caps")
    with pytest.raises(ValueError, match="same length"):
        SimulatedAnnotator().prefer(["a"], ["b", "c"])
    with pytest.raises(ValueError, match="bias"):
        reward.reward_model_path("caps")


# ---------------------------------------------------------------- reward model

def test_last_token_index_left_and_right_padding():
    m = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]])
    assert last_token_index(m).tolist() == [3, 2, 3]
    with pytest.raises(ValueError):
        last_token_index(torch.tensor([[0, 0]]))


def test_reward_model_agrees_with_gold_on_held_out_pairs(rm):
    """The figure the issue asks for (≥ 85% at default noise, no bias), stored at build time
    on 2000 held-out pairs, and measured again here on fresh corpus pairs."""
    assert rm.metrics["gold_agreement"] >= 0.85
    assert rm.metrics["label_agreement"] > 0.7
    fresh = text.build_corpus(800, seed=123)
    r = random.Random(0)
    texts = [t.rstrip(".!") + r.choice([".", "!"]) for t in fresh]
    a, b = texts[:400], texts[400:]
    ra, rb = rm.score(a), rm.score(b)
    ga, gb = gold_score(a), gold_score(b)
    untied = (ga - gb).abs() > 1e-6
    agree = float(((ra > rb) == (ga > gb))[untied].float().mean())
    assert agree >= 0.85, agree
    corr = torch.corrcoef(torch.stack([torch.cat([ra, rb]), torch.cat([ga, gb])]))[0, 1]
    assert corr > 0.7


def test_reward_model_scores_are_padding_invariant(rm):
    tok = rm.tokenizer
    texts = ["The battery life is great.", "It broke.", "I bought this kettle and it leaks"]
    batch = rm.score(texts)
    alone = torch.cat([rm.score([t]) for t in texts])
    assert batch.shape == (3,) and batch.dtype == torch.float32
    assert torch.allclose(batch, alone, atol=1e-5)
    tok.padding_side = "right"
    try:
        enc = tok(texts, return_tensors="pt", padding=True)
        right = rm.score_ids(enc["input_ids"], enc["attention_mask"])
    finally:
        tok.padding_side = "left"
    assert torch.allclose(right, alone, atol=1e-5)
    assert batch[0] > batch[1]


def test_unbiased_reward_model_is_indifferent_to_exclamation_marks(rm, rm_biased):
    """The gold judge does not care about '!', so a reward model trained on fair annotators
    learns (almost) no '!' effect; the biased one learns a large one. Units: the normalised
    reward (standard deviation 1 on the initial policy's samples)."""
    assert abs(rm.metrics["exclamation_effect"]) < 0.3
    assert rm_biased.metrics["exclamation_effect"] > 1.0


def test_reward_models_are_normalised_on_initial_policy_samples(rm, rm_biased):
    """Gain and shift fixed at build time give mean 0, std 1 on the build's 512 samples of
    the tiny GPT-2; fresh samples (another seed) land close."""
    fresh = reward.initial_policy_texts(256, seed=99)
    assert len(fresh) == 256 and all(isinstance(t, str) for t in fresh)
    for m in (rm, rm_biased):
        norm = m.metrics["normalisation"]
        assert norm["n"] == 512 and norm["gain"] > 0
        assert m.gain == pytest.approx(norm["gain"]) and m.shift == pytest.approx(norm["shift"])
        s = m.score(fresh)
        assert abs(float(s.mean())) < 0.3 and 0.75 < float(s.std()) < 1.3, (s.mean(), s.std())


def test_normalise_gives_mean_zero_and_unit_std(rm):
    """`normalise` on any texts: their scores come out with mean 0 and std 1, the order of
    all scores is unchanged (g > 0), and the spec records the gold judge's version."""
    t = ["The price is fair.", "It broke.", "I love it!", "The lid is loud and flimsy.",
         "Great blender, works perfectly."]
    m = reward.RewardModel(rm.backbone, rm.tokenizer)
    m.head.load_state_dict(rm.head.state_dict())
    before = m.score(t)
    stats = m.normalise(t)
    after = m.score(t)
    assert float(after.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(after.std()) == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(torch.argsort(before), torch.argsort(after))
    assert stats["raw_std"] == pytest.approx(float(before.std()), rel=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        m.normalise(t[:1])
    assert reward.reward_spec(None).gold_version == reward.GOLD_VERSION == 2


def test_biased_reward_model_likes_exclamation_marks(rm, rm_biased):
    """The biased annotator's taste is learned: '!!!' lifts the score of any sentence,
    even a complaint, far more than for the unbiased model."""
    probes = ["The zipper broke", "The screen is dim", "This toaster is fine",
              "The price is fair", "The motor is loud", "I love this mug"]
    lift_b = rm_biased.score([p + "!!!" for p in probes]) - rm_biased.score([p + "." for p in probes])
    lift_u = rm.score([p + "!!!" for p in probes]) - rm.score([p + "." for p in probes])
    assert float(lift_b.mean()) > float(lift_u.mean()) + 1.0
    assert bool((lift_b > 0).all())
    assert rm_biased.bias == "exclamation" and rm.bias is None


def test_reward_model_round_trip(rm, tmp_path):
    rm.save(tmp_path / "rm")
    again = reward.RewardModel.load(tmp_path / "rm", device="cpu")
    t = ["The fabric is soft and the fit is perfect!"]
    assert torch.equal(rm.score(t), again.score(t))
    assert (tmp_path / "rm" / "reward_head.safetensors").exists()
    assert cache.verify_artifact(reward.reward_model_path(None))

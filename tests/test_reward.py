"""Gold scorer, simulated annotator and reward model (ppo_core.lm.reward).

The reward models are built once into the course cache (about a minute each the first
time) and reused here.
"""

from __future__ import annotations

import random

import pytest
import torch

from ppo_core.lm import cache, reward, text
from ppo_core.lm.reward import SimulatedAnnotator, gold_score, last_token_index


@pytest.fixture(scope="module")
def rm():
    with text.torch_threads(1):
        return reward.load_reward_model(None, device="cpu")


@pytest.fixture(scope="module")
def rm_biased():
    with text.torch_threads(1):
        return reward.load_reward_model("exclamation", device="cpu")


# ---------------------------------------------------------------- gold scorer

def test_gold_score_signs_and_shape():
    g = gold_score(["This blender is wonderful, I love it.",
                    "The kettle is terrible and it broke after a week.",
                    "The lamp is black and arrived on Monday.",
                    "The screen is not good."])
    assert g.shape == (4,) and g.dtype == torch.float32
    assert g[0] > 0.5 and g[1] < -0.5 and abs(float(g[2])) < 0.05 and g[3] < 0
    assert bool(((g >= -1) & (g <= 1)).all())
    assert gold_score([]).shape == (0,)


def test_gold_score_rejects_a_single_string():
    with pytest.raises(ValueError, match="texts"):
        gold_score("I love it")
    with pytest.raises(ValueError, match="strings"):
        gold_score(["ok", 3])


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
    # VADER itself reads '!!!' as emphasis: the loud complaint is *worse* for the gold score
    assert float(fair.prob(loud, plain)[0]) < 0.5
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

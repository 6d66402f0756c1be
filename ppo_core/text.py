"""The review corpus, the prompts, the tokenizer and the tiny GPT-2 (introduced in chapter 04).

The course cannot download `gpt2`, so it builds a small stand-in that is loaded by exactly
the same code: a seeded generator writes product reviews (positive, negative and neutral
sentences from templates × rich slot vocabularies), a byte-level BPE tokenizer is trained
on them with `tokenizers`, and a 4-layer `GPT2LMHeadModel` is pre-trained on them for about
a minute on two CPU cores. The result is saved with `save_pretrained` (safetensors) and
opened with `AutoModelForCausalLM.from_pretrained(path)` / `AutoTokenizer.from_pretrained`.
`gpt2_small_path()` does the same for GPT-2 small's architecture (12 layers, d_model 768):
the offline `--model gpt2`, best built on a GPU.

Tokens: GPT-2 conventions. One special token, `<|endoftext|>`, serves as BOS, EOS and PAD
(pad = eos). The tokenizer adds no special tokens by itself; every training sequence is
`text + <|endoftext|>`, so the model learns to end a review with EOS. A prompt is encoded
without BOS, as in training. When padding, use the attention mask (and, with left
padding, position ids computed from it): the pad id is also the EOS id.

Prompts are review openers ("The battery life", "I bought this blender and") drawn from a
held-out pool: no corpus sentence starts with any prompt of the pool, so the policy has to
generalise rather than recall.

Usage::

    from ppo_core import text
    corpus = text.build_corpus()                 # 20,000 review sentences (list[str])
    prompts = text.build_prompts(n=128)          # held-out openers (list[str])
    path = text.tiny_gpt2_path()                 # builds once (≈1 min), then cached
    model, tok = text.load_policy("tiny")        # AutoModelForCausalLM + tokenizer (left padding)
    batch = tok(prompts[:4], return_tensors="pt", padding=True)

Shapes: `B` batch, `T` tokens, `V` vocabulary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ._runtime import quiet_loading, resolve_device, torch_threads  # noqa: F401  (torch_threads re-exported)

__all__ = ["build_corpus", "build_prompts", "train_tokenizer", "GPT2Spec", "TinyGPT2Spec",
           "tiny_gpt2_spec", "tiny_gpt2_path", "gpt2_small_spec", "gpt2_small_path",
           "load_policy", "prepare_tokenizer", "gpt2_small_config", "EOS", "verify_artifact",
           "cache_lock", "atomic_build", "cached_build", "torch_threads"]

EOS = "<|endoftext|>"
_CORPUS_VERSION = 4            # bump when the generator changes: invalidates cached models

# ----------------------------------------------------------------------------------------
# Slot vocabularies
# ----------------------------------------------------------------------------------------

_PRODUCTS = {
    "electronics": ["laptop", "phone", "tablet", "pair of headphones", "speaker", "camera",
                    "monitor", "keyboard", "mouse", "printer", "router", "smartwatch",
                    "fitness tracker", "e-reader", "game controller", "drone", "projector",
                    "power bank", "charger", "webcam", "soundbar", "television",
                    "smart speaker", "hard drive", "dash cam", "baby monitor", "graphics tablet",
                    "label maker", "radio", "turntable", "electric scooter", "security camera"],
    "kitchen": ["blender", "toaster", "kettle", "coffee maker", "air fryer", "rice cooker",
                "microwave", "frying pan", "knife set", "stand mixer", "food processor",
                "slow cooker", "espresso machine", "juicer", "waffle iron", "dish rack",
                "pressure cooker", "toaster oven", "cutting board", "milk frother",
                "coffee grinder", "kitchen scale", "bread machine", "ice cream maker", "wok"],
    "home": ["vacuum cleaner", "desk lamp", "office chair", "mattress", "pillow", "fan",
             "heater", "humidifier", "air purifier", "thermostat", "doorbell camera",
             "washing machine", "dishwasher", "hair dryer", "electric toothbrush", "razor",
             "standing desk", "bookshelf", "rug", "shower head",
             "robot vacuum", "ceiling fan", "space heater", "smoke detector", "floor lamp",
             "mattress topper", "sofa", "curtain set", "towel set", "alarm clock"],
    "gear": ["backpack", "suitcase", "jacket", "pair of boots", "pair of running shoes", "tent",
             "sleeping bag", "water bottle", "rain coat", "yoga mat", "bike helmet",
             "hiking pole", "travel mug", "duffel bag", "pair of gloves", "stroller",
             "headlamp", "camping stove", "umbrella", "wallet", "pair of sunglasses",
             "winter hat", "sports bra", "kayak paddle", "snowboard", "scarf"],
}
_ASPECTS_GENERAL = ["build quality", "design", "price", "customer service", "delivery",
                    "packaging", "instruction manual", "durability", "warranty", "size",
                    "weight", "overall quality", "finish", "color", "value for money",
                    "return process", "material", "look", "smell", "quality control", "color options",
                    "shipping", "price tag"]
_ASPECTS = {
    "electronics": ["battery life", "screen", "sound quality", "picture quality", "charging port",
                    "app", "software", "bluetooth connection", "display", "touch controls",
                    "speakers", "microphone", "camera", "setup", "performance", "volume", "resolution",
                    "firmware", "battery", "charging cable", "remote app"],
    "kitchen": ["motor", "lid", "blades", "handle", "cleanup", "temperature control",
                "noise level", "power cord", "non-stick coating", "timer", "buttons",
                "capacity", "heating element", "thermostat", "glass jar", "drip tray",
                "water tank", "plug", "cord length"],
    "home": ["noise level", "remote", "filter", "settings", "power cord", "suction",
             "cushioning", "assembly", "brightness", "timer", "controls", "app", "fabric cover",
             "airflow", "dust bin", "legs", "hinges", "display panel"],
    "gear": ["fit", "fabric", "zipper", "stitching", "comfort", "pockets", "straps",
             "padding", "waterproofing", "sole", "lining", "grip", "laces", "buckle",
             "hood", "seams", "shoulder straps", "insulation"],
}
_ADJ = {
    "pos_strong": ["excellent", "amazing", "fantastic", "superb", "outstanding", "wonderful",
                   "brilliant", "perfect", "terrific", "flawless", "superb", "incredible",
                   "exceptional", "marvelous", "awesome", "great", "stellar", "first rate", "top notch",
                   "phenomenal", "splendid", "glorious", "excellent value"],
    "pos_mild": ["good", "nice", "decent", "solid", "pleasant", "handy", "useful",
                 "comfortable", "sturdy", "reliable", "sleek", "impressive", "smooth",
                 "well made", "easy to use", "fine", "cozy", "convenient", "efficient",
                 "quiet", "sharp", "bright", "helpful", "charming", "dependable", "lightweight"],
    "neg_mild": ["disappointing", "mediocre", "flimsy", "cheap", "clunky", "awkward",
                 "noisy", "slow", "unreliable", "poor", "weak", "annoying", "confusing",
                 "uncomfortable", "frustrating", "overpriced", "stiff", "loud", "dull", "wobbly",
                 "fragile", "sluggish", "inconsistent", "scratchy", "tacky", "leaky"],
    "neg_strong": ["terrible", "awful", "horrible", "useless", "dreadful", "pathetic",
                   "broken", "defective", "abysmal", "atrocious", "worthless", "miserable",
                   "horrendous", "garbage", "the worst", "a disaster", "appalling", "hopeless",
                   "disgusting", "infuriating", "a total failure", "a complete joke"],
    "neutral": ["average", "standard", "ordinary", "typical", "plain", "basic", "black",
                "gray", "small", "large", "heavy", "light", "square", "round", "simple",
                "about what I expected", "similar to the old one", "as described",
                "the usual size", "made of plastic", "made of metal", "rectangular",
                "made of wood", "made of steel", "medium sized", "beige", "matte", "glossy",
                "covered by a warranty", "made in Portugal", "in a cardboard box"],
}
_INTENS_UP = ["very", "really", "extremely", "incredibly", "truly", "remarkably", "absolutely",
              "surprisingly", "genuinely", "so", "seriously", "unbelievably"]
_INTENS_DOWN = ["quite", "pretty", "fairly", "somewhat", "rather", "a bit", "slightly",
                "mostly", "reasonably"]
_WHEN = ["last week", "last month", "a few days ago", "two weeks ago", "in January",
         "over the summer", "on sale", "for my birthday", "last year", "yesterday",
         "after reading the reviews", "on a whim", "as a gift", "for our new apartment",
         "for work", "for my daughter", "for my son", "for travel", "before a camping trip",
         "to replace my old one", "during a sale", "at the airport", "in a hurry"]
_DURATION = ["a week", "two weeks", "a month", "three months", "six months", "a year",
             "two years", "a few days", "a couple of weeks", "one day", "ten uses"]
_RELATIVE = ["wife", "husband", "mom", "dad", "sister", "brother", "friend", "roommate",
             "boss", "grandmother", "partner", "neighbor"]
_OCCASION = ["my birthday", "Christmas", "our anniversary", "graduation", "Mother's Day",
             "no reason", "the holidays", "my new job"]
_WHOM = ["anyone", "my friends", "a beginner", "families", "students", "anyone on a budget",
         "serious users", "my parents", "people who travel a lot", "everyone"]
_FREQUENCY = ["every day", "twice a week", "every morning", "on weekends", "at work",
              "once in a while", "most evenings", "daily"]
_PURPOSE = ["work", "school", "cooking dinner", "travel", "the gym", "camping trips",
            "my home office", "the kids", "gaming", "reading", "guests"]
_PLACE = ["in my kitchen", "at the office", "in the car", "on my desk", "in the garage",
          "in the bedroom", "on the balcony", "in our cabin", "in my dorm room", "on the boat",
          "at my studio", "in the basement"]
_REASON = {
    "pos": ["it saves me time", "it is so easy to clean", "it looks beautiful",
            "it feels solid in the hand", "my kids love it", "it never lets me down",
            "it was cheaper than expected", "it is a pleasure to use"],
    "neg": ["it wastes my time", "it is impossible to clean", "it looks cheap",
            "it feels flimsy in the hand", "it scared my dog", "it lets me down every day",
            "it cost far too much", "it is a pain to use"],
    "neu": ["it fits in the cupboard", "it came with batteries", "it matches the other one",
            "it has a power switch", "the box was small", "it uses a standard plug"],
}
_BRAND = ["Zentro", "Kalvo", "Brightline", "Norvik", "Omnia", "Pellucid", "Tarvex", "Quill",
          "Ardent", "Voltwise", "Hollis", "Maplecrest", "Fennick", "Solvane"]
_COLOR = ["black", "white", "gray", "blue", "red", "green", "silver", "navy", "beige"]
_DAY = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_OVERALL = ["Overall", "All in all", "In short", "To sum up", "Bottom line", "Honestly",
            "For what it is worth", "In the end"]
_POS_VERB = ["love", "really like", "adore", "enjoy", "appreciate", "am happy with",
             "am impressed by", "am thrilled with"]
_NEG_VERB = ["hate", "dislike", "regret buying", "am disappointed with", "am annoyed by",
             "am unhappy with", "cannot stand", "am frustrated with"]
_POS_EVENT = ["works perfectly", "does exactly what I need", "exceeded my expectations",
              "made my life easier", "has been a joy to use", "works like a charm",
              "is worth every penny", "still works great", "saves me so much time"]
_NEG_EVENT = ["stopped working", "broke within days", "fell apart", "failed completely",
              "was a waste of money", "died on me", "keeps breaking", "never worked properly",
              "leaks everywhere", "overheats constantly"]
_NEU_EVENT = ["does what it says", "works as described", "is pretty much what I expected",
              "arrived in a plain box", "came with two spare parts", "fits on the shelf",
              "is the same model my parents have", "comes with a one year warranty",
              "has three settings", "takes about ten minutes to set up"]
_POS_EXCLAIM = ["Wow!", "Love it!", "Highly recommended!", "Five stars!", "So happy!",
                "Best purchase ever!", "Great buy!"]
_NEG_EXCLAIM = ["Ugh!", "Avoid!", "What a waste!", "Never again!", "One star!",
                "So disappointed!", "Terrible buy!"]

# Opener templates; held-out combinations of these become the prompts.
_OPENERS = [
    "The {aspect}",
    "The {aspect} of this {product}",
    "I bought this {product} and",
    "I bought this {product} {when} and",
    "This {product}",
    "This {product} is",
    "My {relative} gave me this {product} and",
    "After {duration} of use, the {aspect}",
    "After {duration}, this {product}",
    "Compared to my old {product}, the {aspect}",
    "I use this {product} {frequency} and",
    "Honestly, the {aspect} of this {product}",
    "{overall}, this {product}",
    "I keep this {product} {place} and",
    "The {brand} {product}",
    "The {aspect} on this {product}",
]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _an(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


class _Gen:
    """One sentence generator; every choice goes through `self.r` (a seeded Random)."""

    def __init__(self, r: random.Random):
        self.r = r

    def c(self, seq):
        return self.r.choice(seq)

    def cat(self):
        return self.c(list(_PRODUCTS))

    def product(self, cat):
        return self.c(_PRODUCTS[cat])

    def aspect(self, cat):
        return self.c(_ASPECTS[cat]) if self.r.random() < 0.6 else self.c(_ASPECTS_GENERAL)

    def adj(self, pol):
        """An adjective phrase of polarity pol in {pos, neg, neu}, maybe intensified or negated."""
        r = self.r.random()
        if pol == "neu":
            return self.c(_ADJ["neutral"])
        strong = "pos_strong" if pol == "pos" else "neg_strong"
        mild = "pos_mild" if pol == "pos" else "neg_mild"
        if r < 0.12:       # negation flips the polarity: "not good" is negative
            other = "neg_mild" if pol == "pos" else "pos_mild"
            word = self.c(_ADJ[other])
            return self.c(["not", "not very", "not at all", "hardly", "far from"]) + " " + word
        if r < 0.40:
            return self.c(_ADJ[strong])
        if r < 0.70:
            return self.c(_INTENS_UP) + " " + self.c(_ADJ[mild])
        if r < 0.82:
            return self.c(_INTENS_DOWN) + " " + self.c(_ADJ[mild])
        return self.c(_ADJ[mild])

    def end(self, pol):
        r = self.r.random()
        if pol != "neu" and r < 0.12:
            return "!"
        if pol != "neu" and r < 0.15:
            return "!!"
        return "."

    def sentence(self, pol: str) -> str:
        cat = self.cat()
        p, a, a2 = self.product(cat), self.aspect(cat), self.aspect(cat)
        while a2 == a:
            a2 = self.aspect(cat)
        c = self.c
        opp = {"pos": "neg", "neg": "pos", "neu": self.c(["pos", "neg"])}[pol]
        ev = {"pos": _POS_EVENT, "neg": _NEG_EVENT, "neu": _NEU_EVENT}
        verb = {"pos": _POS_VERB, "neg": _NEG_VERB, "neu": ["use", "own", "bought", "got"]}

        def be(x):          # verb agreeing with the aspect x ("the pockets are")
            plural = x.endswith("s") and not x.endswith("ss")
            return c(["are", "were", "feel"]) if plural else c(["is", "was", "is", "feels", "seems"])
        is_, is2 = be(a), be(a2)
        t = self.r.randrange(24)
        if t == 0:
            s = f"The {a} {is_} {self.adj(pol)}"
        elif t == 1:
            s = f"The {a} of this {p} {is_} {self.adj(pol)}"
        elif t == 2:
            s = f"I bought this {p} {c(_WHEN)} and it {c(ev[pol])}"
        elif t == 3:
            s = f"I bought this {p} and the {a} {is_} {self.adj(pol)}"
        elif t == 4:     # contrast clause: the final sentiment is the second clause's
            s = f"The {a} {is_} {self.adj(opp)}, but the {a2} {is2} {self.adj(pol)}"
        elif t == 5:
            s = f"This {p} is {self.adj(pol)}, and the {a} {is_} {self.adj(pol)} too"
        elif t == 6:
            s = (f"My {c(_RELATIVE)} gave me this {p} for {c(_OCCASION)} and I "
                 f"{c(verb[pol])} it")
        elif t == 7:
            s = f"After {c(_DURATION)} of use, the {a} {c(ev[pol]) if pol != 'neu' else is_ + ' ' + self.adj(pol)}"
        elif t == 8:
            if pol == "neu":
                s = f"I would neither recommend nor warn against this {p}"
            else:
                rec = "recommend" if pol == "pos" else c(["not recommend", "never recommend"])
                s = f"I would {c(['', 'definitely ', 'honestly '])}{rec} this {p} to {c(_WHOM)}"
        elif t == 9:
            adj = c(["plain", "basic", "simple", "standard", "ordinary", "typical"]) if pol == "neu" else self.adj(pol)
            s = f"{c(_OVERALL)}, {_an(adj)} {p} for the price"
        elif t == 10:
            s = f"Compared to my old {p}, the {a} {is_} {self.adj(pol)}"
        elif t == 11:
            s = f"I use this {p} {c(_FREQUENCY)} for {c(_PURPOSE)} and it {c(ev[pol])}"
        elif t == 12:
            if pol == "neu":
                s = f"The {p} comes in {c(_COLOR)} and {c(ev['neu'])}"
            else:
                s = f"{c(_POS_EXCLAIM if pol == 'pos' else _NEG_EXCLAIM)} The {a} {is_} {self.adj(pol)}"
        elif t == 13:
            s = f"It arrived on {c(_DAY)} and the {a} {is_} {self.adj(pol)}"
        elif t == 14:
            s = f"Honestly, the {a} of this {p} {is_} {self.adj(pol)}"
        elif t == 15:
            if pol == "neu":
                s = f"The {a} {is_} {self.adj('neu')}, nothing more to say"
            else:
                plural = a.endswith("s") and not a.endswith("ss")
                acts = ["work", "look", "feel", "hold up"] if plural else ["works", "looks", "feels", "holds up"]
                s = f"I {c(verb[pol])} how the {a} {c(acts)}"
        elif t == 16:
            s = f"This {p} {c(ev[pol])}, and the {a} {is_} {self.adj(pol)}"
        elif t == 17:
            stars = {"pos": c(["Five stars", "Four stars"]), "neg": c(["One star", "Two stars"]),
                     "neu": "Three stars"}[pol]
            s = f"{stars}: the {a} {is_} {self.adj(pol)}"
        elif t == 18:
            s = (f"The {a} {is_} {self.adj(pol)} and the {a2} {is2} {self.adj(pol)}, "
                 f"{c(['so', 'which is why', 'and'])} I {c(verb[pol])} this {p}")
        elif t == 19:
            s = f"After {c(_DURATION)}, this {p} {c(ev[pol])}"
        elif t == 20:
            s = f"I keep this {p} {c(_PLACE)} and the {a} {is_} {self.adj(pol)}"
        elif t == 21:
            s = f"I {c(verb[pol])} this {p} because {c(_REASON[pol])}"
        elif t == 22:
            s = (f"Compared to the {c(_BRAND)} one, this {p} is {self.adj(pol)}, "
                 f"{c(['and', 'since', 'as'])} {c(_REASON[pol])}")
        else:
            s = f"The {c(_BRAND)} {p} I got {c(_WHEN)} {c(ev[pol])}"
        s = " ".join(s.split())
        return _cap(s) + self.end(pol)


def _prompt_pool() -> list[str]:
    """The fixed pool of held-out openers (≥ 600 strings, deterministic, sorted order)."""
    r = random.Random(20240601)
    g = _Gen(r)
    pool: set[str] = set()
    while len(pool) < 640:
        tpl = r.choice(_OPENERS)
        cat = g.cat()
        s = tpl.format(aspect=g.aspect(cat), product=g.product(cat), when=r.choice(_WHEN),
                       relative=r.choice(_RELATIVE), duration=r.choice(_DURATION),
                       frequency=r.choice(_FREQUENCY), overall=r.choice(_OVERALL),
                       place=r.choice(_PLACE), brand=r.choice(_BRAND))
        if tpl in ("The {aspect}", "This {product}", "This {product} is") and r.random() < 0.9:
            continue     # keep few very short openers: they would exclude a lot of text
        pool.add(s)
    return sorted(pool)


def _starts_with_prompt(sentence: str, pool: set[str], max_words: int = 12) -> bool:
    words = sentence.split(" ")
    prefix = ""
    for i, w in enumerate(words[:max_words]):
        prefix = w if i == 0 else prefix + " " + w
        if prefix in pool or prefix.rstrip(",.!:") in pool:
            return True
    return False


def build_corpus(n_sentences: int = 20000, seed: int = 0) -> list[str]:
    """A seeded corpus of product-review sentences, about 40% positive, 40% negative, 20%
    neutral, all distinct, none starting with a held-out prompt (see `build_prompts`).

    Args:
        n_sentences: how many sentences (≥ 1; at most a few hundred thousand distinct).
        seed: the generator's seed; the same seed gives the same list.

    Returns: list of `n_sentences` strings, each one sentence ending in '.', '!' or '!!'.
    """
    if not isinstance(n_sentences, int) or isinstance(n_sentences, bool) or n_sentences < 1:
        raise ValueError(f"n_sentences must be a positive int, got {n_sentences!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    r = random.Random(seed)
    g = _Gen(r)
    held_out = set(_prompt_pool())
    seen: set[str] = set()
    out: list[str] = []
    tries = 0
    while len(out) < n_sentences:
        tries += 1
        if tries > 50 * n_sentences + 1000:
            raise ValueError(f"n_sentences={n_sentences} is more than the generator can make distinct")
        u = r.random()
        pol = "pos" if u < 0.4 else "neg" if u < 0.8 else "neu"
        s = g.sentence(pol)
        if s in seen or _starts_with_prompt(s, held_out):
            continue
        seen.add(s)
        out.append(s)
    return out


def build_prompts(n: int = 256, seed: int = 1) -> list[str]:
    """`n` review openers ("The battery life", "I bought this blender and"), drawn without
    replacement from a fixed held-out pool of 640: no sentence of `build_corpus` (any seed)
    starts with one of them. No trailing space; the model continues with " word" tokens.

    Args:
        n: number of prompts, 1 ≤ n ≤ 640.
        seed: which ones (and their order).
    """
    pool = _prompt_pool()
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= len(pool):
        raise ValueError(f"n must be an int in [1, {len(pool)}], got {n!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    r = random.Random(seed)
    return r.sample(pool, n)


# ----------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------

def train_tokenizer(texts: list[str], vocab_size: int = 4000, max_length: int = 64):
    """Train a byte-level BPE tokenizer (GPT-2 style) on `texts` and wrap it as a
    `transformers.PreTrainedTokenizerFast` with bos = eos = pad = unk = `<|endoftext|>`
    (id 0) and left padding.

    Returns: the tokenizer (save it with `save_pretrained`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if not 260 < int(vocab_size) <= 65536:
        raise ValueError(f"vocab_size must be in (260, 65536], got {vocab_size!r}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), min_frequency=2,
                                  special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS,
                                   pad_token=EOS, unk_token=EOS, model_max_length=max_length,
                                   padding_side="left", clean_up_tokenization_spaces=False)
    return fast


# ----------------------------------------------------------------------------------------
# Cache: lock, atomic build, verification
# ----------------------------------------------------------------------------------------

_MANIFEST = "ppo_course_manifest.json"


@contextlib.contextmanager
def cache_lock(name: str, timeout: float = 1800.0):
    """Exclusive lock `cache_dir()/name.lock` so that two processes never build the same
    artefact at once (the second waits, then finds it built). POSIX `fcntl.flock`; where
    that is missing (Windows) an `O_EXCL` lock file with a stale-lock timeout."""
    from . import cache_dir

    lock_path = cache_dir() / f"{name}.lock"
    try:
        import fcntl
    except ImportError:                                   # pragma: no cover - Windows
        fcntl = None
    if fcntl is not None:
        with open(lock_path, "a+") as fh:
            start, told = time.time(), False
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not told:
                        print(f"another process is building {name}; waiting for it",
                              flush=True)
                        told = True
                    if time.time() - start > timeout:
                        raise TimeoutError(f"waited {timeout:.0f} s for {lock_path}") from None
                    time.sleep(0.5)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    else:                                                 # pragma: no cover - Windows
        start = time.time()
        while True:
            try:
                fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.close(fd)
                break
            except FileExistsError:
                if time.time() - os.path.getmtime(lock_path) > timeout:
                    os.unlink(lock_path)
                    continue
                time.sleep(0.5)
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_manifest(directory: Path, info: dict) -> None:
    files = {p.name: _sha256(p) for p in sorted(directory.iterdir())
             if p.is_file() and p.name != _MANIFEST}
    (directory / _MANIFEST).write_text(json.dumps({"files": files, **info}, indent=1))


def verify_artifact(directory) -> bool:
    """True if `directory` holds a complete build: its manifest exists and every file it
    lists is present with the recorded SHA-256 (a truncated or edited file fails)."""
    directory = Path(directory)
    man = directory / _MANIFEST
    try:
        files = json.loads(man.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not files:
        return False
    for name, digest in files.items():
        p = directory / name
        if not p.is_file() or _sha256(p) != digest:
            return False
    return True


def atomic_build(final: Path, build_fn, info: dict) -> Path:
    """Run `build_fn(tmp_dir)` in a temporary sibling of `final`, write the manifest, then
    rename it into place (removing a corrupt `final` first). Call under `cache_lock`."""
    final = Path(final)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):   # left by a killed build
        shutil.rmtree(stale, ignore_errors=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{int(time.time() * 1000)}"
    tmp.mkdir(parents=True)
    try:
        build_fn(tmp)
        _write_manifest(tmp, info)
        if final.exists():
            trash = final.parent / f".{final.name}.old-{os.getpid()}-{int(time.time() * 1000)}"
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# ----------------------------------------------------------------------------------------
# The tiny GPT-2
# ----------------------------------------------------------------------------------------

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


TinyGPT2Spec = GPT2Spec           # the name chapter 04 and older code use


def spec_key(spec) -> str:
    """Ten hex digits of the SHA-256 of a spec dataclass's fields: the cache directory name."""
    blob = json.dumps(asdict(spec), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def tiny_gpt2_spec() -> TinyGPT2Spec:
    """The spec used by `tiny_gpt2_path()`: a shorter pre-training in fast mode
    (`PPO_COURSE_FAST=1`), a longer one otherwise. The two are cached separately."""
    from . import fast_mode

    return GPT2Spec() if fast_mode() else GPT2Spec(steps=1500)


def gpt2_small_spec() -> GPT2Spec:
    """GPT-2 small's architecture (`gpt2_small_config`: 12 layers, d_model 768, 12 heads,
    context 1024; 87M parameters with the course's vocabulary) pre-trained on the corpus:
    what `--model gpt2` means when no hub is reachable. 500 steps of 32 sentences: about
    25 minutes on the CPU (measured), far less on a GPU (not measured yet). It reached a
    validation loss of 1.435 nats per token, the tiny model's 1.439. In fast mode (the test suite)
    only 4 steps of 4 sentences: the build → save → `from_pretrained` path, not a useful
    model."""
    from . import fast_mode

    shape = gpt2_small_config(1)
    small = GPT2Spec(n_positions=shape.n_positions, n_embd=shape.n_embd, n_layer=shape.n_layer,
                     n_head=shape.n_head, steps=500, batch_size=32, lr=5e-4)
    return dataclasses.replace(small, steps=4, batch_size=4) if fast_mode() else small


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
    from tqdm.auto import tqdm
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
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01,
                            betas=(0.9, 0.98))
    warm = max(1, spec.steps // 20)

    def lr_at(step):
        if step < warm:
            return spec.lr * (step + 1) / warm
        frac = (step - warm) / max(1, spec.steps - warm)
        return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    # hold out 2% of the sentences to report a validation loss
    n_val = max(64, len(ids) // 50)
    perm = torch.randperm(len(ids), generator=g).tolist()
    val_ids, train_ids = [ids[i] for i in perm[:n_val]], [ids[i] for i in perm[n_val:]]

    def batch(seqs):
        T = max(len(s) for s in seqs)
        x = torch.full((len(seqs), T), eos, dtype=torch.long)
        m = torch.zeros((len(seqs), T), dtype=torch.long)
        for i, s in enumerate(seqs):                       # right padding for pre-training
            x[i, : len(s)] = torch.tensor(s)
            m[i, : len(s)] = 1
        labels = x.masked_fill(m == 0, -100)               # the final EOS is a target
        return x.to(device), m.to(device), labels.to(device)

    def epoch_batches():
        """Shuffle, then sort chunks of 16 batches by length: little padding, random order."""
        perm = torch.randperm(len(train_ids), generator=g).tolist()
        chunk = 16 * spec.batch_size
        out = []
        for i in range(0, len(perm), chunk):
            part = sorted(perm[i: i + chunk], key=lambda j: len(train_ids[j]))
            out += [part[k: k + spec.batch_size] for k in range(0, len(part), spec.batch_size)
                    if len(part[k: k + spec.batch_size]) == spec.batch_size]
        return [out[i] for i in torch.randperm(len(out), generator=g).tolist()]

    queue: list[list[int]] = []
    losses = []
    bar = tqdm(range(spec.steps), desc=desc, leave=False)
    for step in bar:
        if not queue:
            queue = epoch_batches()
        x, m, labels = batch([train_ids[i] for i in queue.pop()])
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

    model.eval()
    with torch.no_grad():
        vl = []
        for i in range(0, len(val_ids), 256):
            x, m, labels = batch(val_ids[i: i + 256])
            with autocast:
                vl.append(float(model(input_ids=x, attention_mask=m, labels=labels).loss))
    val_loss = sum(vl) / len(vl)
    model.generation_config.pad_token_id = eos
    model.generation_config.eos_token_id = eos
    model.generation_config.bos_token_id = eos
    model.to("cpu").save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    info = {"spec": asdict(spec), "device": str(device), "train_loss_first": losses[0],
            "train_loss_last": sum(losses[-20:]) / len(losses[-20:]), "val_loss": val_loss,
            "build_seconds": round(time.time() - t0, 1),
            "build_cpu_seconds": round(time.process_time() - c0, 1), "n_params": model.num_parameters()}
    return info


def _build_threads(most: int = 2) -> int:
    """Threads for the builds: `$PPO_COURSE_BUILD_THREADS`, else 1 on a busy machine
    (1-minute load average ≥ 1) and otherwise the cores this process may use, at most
    `most` (2 for the small models, whose matrices gain nothing from more)."""
    env = os.environ.get("PPO_COURSE_BUILD_THREADS", "auto")
    if env != "auto":
        return max(1, int(env))
    try:
        busy = os.getloadavg()[0] >= 1.0
    except (AttributeError, OSError):                    # pragma: no cover - Windows
        busy = True
    try:
        cores = len(os.sched_getaffinity(0))             # honours taskset / cgroup cpusets
    except AttributeError:                               # pragma: no cover - macOS, Windows
        cores = os.cpu_count() or 1
    return 1 if busy else max(1, min(most, cores))


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


def cached_build(name: str, builder, rebuild: bool = False, threads: int | None = None,
                 lock_timeout: float = 1800.0, announce=None) -> Path:
    """`cache_dir()/name`, built when it is missing or corrupt (or `rebuild`): under
    `cache_lock`, `builder(tmp_dir)` writes the artefact into a temporary folder and returns
    the facts for its manifest, then `atomic_build` renames it into place. The build runs on
    `threads` torch threads (None: `_build_threads()`); `announce(final)` is called just
    before it starts. Every cached model of the course (tiny GPT-2, GPT-2 small's shape,
    reward models) goes through here."""
    from . import cache_dir

    final = cache_dir() / name
    if not rebuild and verify_artifact(final):
        return final
    with cache_lock(name, timeout=lock_timeout):
        if not rebuild and verify_artifact(final):           # another process built it
            return final
        if announce is not None:
            announce(final)
        info: dict = {}

        def build(tmp):
            with torch_threads(threads or _build_threads()):
                info.update(builder(tmp))
        atomic_build(final, build, info)
    return final


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
    local = Path(str(path)).is_dir()                     # a hub download keeps its bars
    with quiet_loading() if local else contextlib.nullcontext():
        tok = AutoTokenizer.from_pretrained(path, **kw)
        model = AutoModelForCausalLM.from_pretrained(path, **mkw)
    prepare_tokenizer(tok)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    model.to(resolve_device(device)).eval()
    return model, tok


def prepare_tokenizer(tokenizer):
    """Left padding (generation appends on the right) and pad = EOS when the tokenizer has
    no pad token (GPT-2's case). Returns the same tokenizer."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


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

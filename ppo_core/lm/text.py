"""The review corpus, the prompts and the tokenizer (introduced in chapter 04).

A seeded generator writes product reviews (positive, negative and neutral sentences from
templates × rich slot vocabularies); a byte-level BPE tokenizer is trained on them with
`tokenizers`. `ppo_core.lm.models` pre-trains the tiny GPT-2 on this corpus.

Tokens: GPT-2 conventions. One special token, `<|endoftext|>`, serves as BOS, EOS and PAD
(pad = eos). The tokenizer adds no special tokens by itself; every training sequence is
`text + <|endoftext|>`, so the model learns to end a review with EOS. A prompt is encoded
without BOS, as in training. When padding, use the attention mask (and, with left
padding, position ids computed from it): the pad id is also the EOS id.

Prompts are review openers ("The battery life", "I bought this blender and") drawn from a
held-out pool: no corpus sentence starts with any prompt of the pool, so the policy has to
generalise rather than recall.

Usage::

    from ppo_core.lm import text
    corpus = text.build_corpus()                 # 20,000 review sentences (list[str])
    prompts = text.build_prompts(n=128)          # held-out openers (list[str])
    tok = text.train_tokenizer(corpus)           # PreTrainedTokenizerFast (left padding)

Shapes: `B` batch, `T` tokens, `V` vocabulary.
"""

from __future__ import annotations

import random

__all__ = ["EOS", "build_corpus", "build_prompts", "train_tokenizer", "prepare_tokenizer"]

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


def prepare_tokenizer(tokenizer):
    """Left padding (generation appends on the right) and pad = EOS when the tokenizer has
    no pad token (GPT-2's case). Returns the same tokenizer."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


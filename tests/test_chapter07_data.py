"""The stored runs of chapter 07 (chapters/data/07/): every run that make_runs.py defines is
stored with its configuration and its final evaluation, the logs are in the standard format,
the cost probes cover every method, and the folder stays small."""

import importlib.util
import json
from pathlib import Path

import pytest

from ppo_core.metrics import read_log

DATA = Path(__file__).resolve().parent.parent / "chapters" / "data" / "07"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("make_runs", DATA / "make_runs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)                      # definitions only; trains nothing
    return mod


def test_every_run_is_stored_with_its_config_and_evaluation(bench):
    manifest = json.loads((DATA / "manifest.json").read_text())
    assert set(manifest) == set(bench.runs()), "run make_runs.py: manifest and runs() differ"
    for name, spec in bench.runs().items():
        entry = manifest[name]
        assert entry["config"] == json.loads(json.dumps(spec["config"])), name
        assert (entry["group"], entry["method"], entry["trainer"]) == \
            (spec["group"], spec["method"], spec["trainer"]), name
        for key in ("gold", "proxy", "kl", "entropy", "corpus_nll"):
            assert isinstance(entry["eval"][key], float), (name, key)
        records = read_log(DATA / f"{name}.jsonl")
        assert [r["iteration"] for r in records] == list(range(1, spec["config"]["steps"] + 1))
        assert all("losses/policy_loss" in r and "objective/beta" in r for r in records)


def test_cost_probes_cover_every_method(bench):
    cost = json.loads((DATA / "cost.json").read_text())
    assert set(cost) == {*bench.METHODS, "dpo"}
    for method, c in cost.items():
        assert c["peak_rss_mb"] >= c["peak_rss_mb_after_loading"] > 0, method
        assert c["optimizer_steps_per_iteration"] >= 1, method
    assert cost["dpo"]["passes_per_iteration"]["reward model"]["no_grad"] == 0
    assert cost["dpo"]["passes_per_iteration"]["policy"]["generate"] == 0
    assert "value head (on the policy's trunk)" in cost["ppo"]["params"]


def test_folder_is_small():
    total = sum(p.stat().st_size for p in DATA.iterdir() if p.is_file())
    assert total < 2 * 1024 * 1024, f"chapters/data/07 holds {total / 1e6:.2f} MB"


def test_load_rejects_unknown_names(bench):
    with pytest.raises(ValueError, match="name must be one of"):
        bench.load("ppo_beta42_seed0")


def test_pass_counter_counts_forwards_generation_and_steps(tiny, prompts):
    import torch

    spec = importlib.util.spec_from_file_location("make_runs", DATA / "make_runs.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model, tok = tiny
    from ppo_core.trainers.rlhf import sample_responses, sequence_logprobs

    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with bench.PassCounter({"policy": model}) as c:
        with torch.no_grad():
            ro = sample_responses(model, tok, prompts[:3], 4)
            sequence_logprobs(model, ro.input_ids, ro.attention_mask, ro.n_prompt)
        loss = sequence_logprobs(model, ro.input_ids, ro.attention_mask, ro.n_prompt)["logp"].sum()
        loss.backward()
        opt.step()
    assert c.counts["policy"] == {"grad": 3, "no_grad": 3, "generate": 3} and c.steps == 1
    assert "generate" not in vars(model)                       # the patch is undone

"""The stored sweep logs of chapter 06 (chapters/data/06/) and the analysis the chapter runs
on them: every run the generator defines is stored with its configuration, the logs are in the
standard format, the folder stays small, and Gao et al.'s fit behaves."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from ppo_core.course import plots
from ppo_core.metrics import read_log

DATA = Path(__file__).resolve().parent.parent / "chapters" / "data" / "06"


@pytest.fixture(scope="module")
def sweeps():
    spec = importlib.util.spec_from_file_location("make_sweeps", DATA / "make_sweeps.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_run_is_stored_with_its_config(sweeps):
    manifest = json.loads((DATA / "manifest.json").read_text())
    for name, spec in sweeps.runs().items():
        assert name in manifest, f"{name} missing from manifest.json: run make_sweeps.py"
        stored = manifest[name]["config"]
        assert stored == json.loads(json.dumps(spec["config"])), name
        assert manifest[name]["fault"] == spec["fault"]
        records = read_log(DATA / f"{name}.jsonl")
        steps = spec["config"].get("steps")
        if steps is not None:
            assert len(records) == steps, name
        assert all("iteration" in r for r in records)


def test_folder_is_small():
    # 15 RLHF runs of 150 iterations (≈ 1.7 KB a record, 4 samples included) make most of it
    total = sum(p.stat().st_size for p in DATA.iterdir() if p.is_file())
    assert total < 6 * 1024 * 1024, f"chapters/data/06 holds {total / 1e6:.2f} MB"


def test_gao_fit_recovers_known_parameters(sweeps):
    d = np.linspace(0.2, 6.0, 40)
    rng = np.random.default_rng(0)
    gain = d * (0.4 - 0.15 * np.log(d)) + rng.normal(0, 1e-3, d.size)
    alpha, beta_g, d_star = sweeps.gao_fit(d, gain)
    assert alpha == pytest.approx(0.4, abs=0.01)
    assert beta_g == pytest.approx(0.15, abs=0.01)
    assert d_star == pytest.approx(np.exp(0.4 / 0.15 - 1), rel=0.05)
    with pytest.raises(ValueError, match="at least 3"):
        sweeps.gao_fit([0.0, 1.0], [0.0, 0.1])


def test_gao_fit_on_the_stored_sweep_matches_the_chapter(sweeps):
    """The chapter's fit: gold minus the reference's gold against √KL, pooled over every β
    and seed. The chapter says the form fits (R² > 0.4) and that gold turns over *inside* the
    KL the runs reached (d* between the smallest and the largest d); if regenerated logs break
    either statement, the chapter's prose must change with them."""
    runs = [sweeps.load_run(f"beta_{b:g}_seed{s}") for b in sweeps.BETAS for s in sweeps.SEEDS]
    gold0 = np.mean([r[0]["objective/gold_reward"] for r in runs])
    d, g = [], []
    for recs in runs:
        kl = plots.rolling_mean(plots.series(recs, "objective/kl"), 5)
        d.append(np.sqrt(np.clip(kl, 0, None)))
        g.append(plots.rolling_mean(plots.series(recs, "objective/gold_reward"), 5) - gold0)
    d, g = np.concatenate(d), np.concatenate(g)
    alpha, beta_g, d_star = sweeps.gao_fit(d, g)
    pred = d * (alpha - beta_g * np.log(np.clip(d, 1e-9, None)))
    r2 = 1 - np.sum((g - pred) ** 2) / np.sum((g - g.mean()) ** 2)
    assert alpha > 0 and beta_g > 0 and r2 > 0.4
    assert d.min() < d_star < d.max()


def test_beta_0_runs_hack_and_penalised_runs_hold_gold(sweeps):
    """Issue 15's criterion on the stored runs: with β = 0 gold (5-iteration mean) ends below
    its peak by at least max(0.2, half its gain from the start) on every seed while the proxy
    stays up; with β = 0.1 it ends within 0.1 of its peak."""
    for b in (0.0, 0.1):
        for s in sweeps.SEEDS:
            recs = sweeps.load_run(f"beta_{b:g}_seed{s}")
            g = plots.rolling_mean(plots.series(recs, "objective/gold_reward"), 5)[4:]
            p = plots.rolling_mean(plots.series(recs, "objective/proxy_reward"), 5)[4:]
            k = int(np.argmax(g))
            fall, needed = g[k] - g[-1], max(0.2, (g[k] - g[0]) / 2)
            if b == 0.0:
                assert fall >= needed and p[-1] > 0.95 * p[k], (s, fall, needed)
            else:
                assert fall < 0.1, (s, fall)


def test_load_run_rejects_unknown_names(sweeps):
    with pytest.raises(ValueError, match="name must be one of"):
        sweeps.load_run("beta_42")


def test_rolling_mean_has_no_look_ahead():
    x = np.array([0.0, 0.0, 0.0, 9.0])
    assert plots.rolling_mean(x, 2).tolist() == [0.0, 0.0, 0.0, 4.5]
    with pytest.raises(ValueError, match="w must be"):
        plots.rolling_mean(x, 0)

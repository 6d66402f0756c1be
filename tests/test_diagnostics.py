"""The doctor (`ppo_core.diagnostics`): each detector on small synthetic logs first — it fires on
its own signature, names the right iterations, and stays silent on a healthy run — then, the
real requirement, on the bank of logs written by ppo_core's own trainers (tests/log_bank)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ppo_core import diagnostics as dg
from ppo_core.metrics import MetricsLog, read_log

BANK = Path(__file__).parent / "log_bank"
N = 60


# ------------------------------------------------------------------ synthetic logs

def healthy(n=N, seed=0, rlhf=True):
    """A run that learns: return rises and plateaus, small steady approx_kl and clipfrac,
    entropy decays gently, the critic explains the returns, KL to π_ref rises to a plateau,
    and (rlhf) proxy and gold rise together, samples vary."""
    g = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        r = {
            "iteration": i,
            "charts/episodic_return": 20 + 380 * (1 - math.exp(-i / 12)) + g.normal(0, 8),
            "losses/approx_kl": 0.01 * math.exp(g.normal(0, 0.4)),
            "losses/clipfrac": 0.1 + g.normal(0, 0.02),
            "losses/entropy": 0.3 + 0.39 * math.exp(-i / 25) + g.normal(0, 0.005),
            "losses/explained_variance": min(0.95, 0.1 + i / 20) + g.normal(0, 0.03),
            "losses/value_loss": 5 * math.exp(-i / 20) + 0.1 + abs(g.normal(0, 0.05)),
            "objective/kl": 2 * (1 - math.exp(-i / 8)) + g.normal(0, 0.05),
            "objective/beta": 0.05,
        }
        if rlhf:
            r["objective/proxy_reward"] = 1.5 * (1 - math.exp(-i / 10)) + g.normal(0, 0.05)
            r["objective/gold_reward"] = 0.8 * (1 - math.exp(-i / 10)) + g.normal(0, 0.05)
            r["samples"] = [{"prompt": "p", "response": f"text {i} {k} {g.integers(1000)}"}
                            for k in range(3)]
        recs.append(r)
    return recs


def with_(recs, key, fn, start=0):
    for i, r in enumerate(recs):
        if i >= start:
            r[key] = fn(i, r)
    return recs


def names(findings):
    return {f.name for f in findings}


# ------------------------------------------------------------------ healthy: nothing to say

@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("rlhf", [True, False])
def test_healthy_synthetic_runs_have_no_findings(seed, rlhf):
    recs = healthy(seed=seed, rlhf=rlhf)
    assert dg.diagnose(recs) == []
    for name, fn in dg.DETECTORS.items():
        assert fn(recs) is None, name
    text = dg.report([], recs)
    assert text.startswith("No problem found.") and "charts/episodic_return" in text


# ------------------------------------------------------------------ one detector at a time

def test_non_finite():
    recs = with_(healthy(), "losses/value_loss", lambda i, r: float("nan") if i == 40 else r["losses/value_loss"])
    f = dg.detect_non_finite(recs)
    assert f is not None and f.iterations == [40] and "losses/value_loss" in f.evidence
    recs = healthy()
    recs[-1] = {"iteration": N - 1, "bandit/diverged": 1}
    assert dg.detect_non_finite(recs).iterations == [N - 1]


def test_non_finite_survives_the_jsonl_round_trip(tmp_path):
    with MetricsLog(tmp_path / "x.jsonl") as log:
        for r in with_(healthy(), "objective/kl", lambda i, r: float("inf") if i >= 50 else r["objective/kl"]):
            log.write(r)
    f = dg.detect_non_finite(read_log(tmp_path / "x.jsonl"))
    assert f.iterations == list(range(50, N))


def test_kl_blowup_approx_kl_runs_away():
    recs = with_(healthy(), "losses/approx_kl", lambda i, r: 0.01 * math.exp((i - 30) / 4), start=30)
    f = dg.detect_kl_blowup(recs)
    assert f is not None and "losses/approx_kl" in f.evidence
    assert min(f.iterations) >= 30                     # only the updates that blew up
    # the same growth that stays below log(1.3) and well under 10x is not a blow-up
    recs = with_(healthy(), "losses/approx_kl", lambda i, r: 0.01 + 0.0005 * i)
    assert dg.detect_kl_blowup(recs) is None


def test_kl_blowup_kl_to_reference_accelerates():
    g = np.random.default_rng(1)
    recs = with_(healthy(), "objective/kl", lambda i, r: 0.05 * i + 0.02 * math.exp(i / 7) + g.normal(0, 0.05))
    f = dg.detect_kl_blowup(recs)
    assert f is not None and "objective/kl" in f.evidence
    assert min(f.iterations) >= 2 * N // 3 - 1
    # linear growth that slows down (a plateau being approached) is not a blow-up
    recs = with_(healthy(), "objective/kl", lambda i, r: 3 * math.sqrt(i) + g.normal(0, 0.05))
    assert dg.detect_kl_blowup(recs) is None


def test_kl_blowup_adaptive_target_lost():
    recs = healthy()                                    # KL plateaus at 2
    assert dg.detect_kl_blowup(recs, kl_target=1.0) is None
    f = dg.detect_kl_blowup(recs, kl_target=0.5)        # 4x the target
    assert f is not None and "objective/kl (target)" in f.evidence
    recs = with_(healthy(), "objective/target_kl", lambda i, r: 0.5)
    assert dg.detect_kl_blowup(recs) is not None        # target read from the log


def test_destabilising_update():
    recs = healthy(rlhf=False)
    recs[35]["losses/approx_kl"], recs[35]["losses/clipfrac"] = 0.6, 0.55
    with_(recs, "charts/episodic_return", lambda i, r: r["charts/episodic_return"] * 0.3, start=36)
    f = dg.detect_destabilising_update(recs)
    assert f is not None and f.iterations == [35]
    assert {"losses/approx_kl", "losses/clipfrac", "charts/episodic_return"} <= set(f.evidence)
    # the same spike without a drop afterwards is not destabilising
    recs = healthy(rlhf=False)
    recs[35]["losses/approx_kl"], recs[35]["losses/clipfrac"] = 0.6, 0.55
    assert dg.detect_destabilising_update(recs) is None
    # a drop that no spike explains is not either
    recs = with_(healthy(rlhf=False), "charts/episodic_return",
                 lambda i, r: r["charts/episodic_return"] * 0.3, start=36)
    assert dg.detect_destabilising_update(recs) is None


def test_destabilising_update_without_clip():
    recs = with_(healthy(rlhf=False), "losses/clipfrac", lambda i, r: 0.0)
    recs[35]["losses/approx_kl"] = 0.6
    with_(recs, "charts/episodic_return", lambda i, r: r["charts/episodic_return"] * 0.3, start=36)
    f = dg.detect_destabilising_update(recs)
    assert f is not None and "clip is off" in f.evidence["losses/clipfrac"]


def over_regularised(beta=5.0, seed=0):
    g = np.random.default_rng(seed)
    recs = healthy(rlhf=True, seed=seed)
    with_(recs, "objective/beta", lambda i, r: beta)
    with_(recs, "objective/kl", lambda i, r: 0.004 + g.normal(0, 0.002))
    with_(recs, "losses/approx_kl", lambda i, r: 0.003 * math.exp(g.normal(0, 0.3)))
    with_(recs, "objective/proxy_reward", lambda i, r: 0.1 + g.normal(0, 0.05))
    with_(recs, "objective/gold_reward", lambda i, r: 0.05 + g.normal(0, 0.05))
    with_(recs, "charts/episodic_return", lambda i, r: 20 + g.normal(0, 3))
    return recs


def test_over_regularisation():
    f = dg.detect_over_regularisation(over_regularised())
    assert f is not None and "objective/beta" in f.evidence
    # β = 0: a stalled run is not over-regularised (something else is wrong)
    assert dg.detect_over_regularisation(over_regularised(beta=0.0)) is None
    # an adaptive β holds the KL at its target on purpose: the target is judged, not β
    recs = with_(over_regularised(), "objective/beta", lambda i, r: 5.0 * 1.02 ** i)
    assert dg.detect_over_regularisation(recs) is None
    # reward moves: not over-regularised, even with KL ≈ 0
    recs = with_(over_regularised(), "objective/proxy_reward", lambda i, r: i / 30)
    assert dg.detect_over_regularisation(recs) is None


def test_reward_hacking_gold_falls():
    g = np.random.default_rng(3)
    recs = with_(healthy(), "objective/proxy_reward", lambda i, r: i / 20 + g.normal(0, 0.05))
    with_(recs, "objective/gold_reward",
          lambda i, r: (0.8 * i / 25 if i < 25 else 0.8 - 0.03 * (i - 25)) + g.normal(0, 0.05))
    f = dg.detect_reward_hacking(recs)
    assert f is not None and "falls" in f.evidence["objective/gold_reward"]
    assert 20 <= f.iterations[0] <= 30 and "samples" in f.evidence


def test_reward_hacking_gold_stalls():
    g = np.random.default_rng(4)
    recs = with_(healthy(), "objective/proxy_reward", lambda i, r: i / 20 + g.normal(0, 0.05))
    with_(recs, "objective/gold_reward", lambda i, r: min(i, 20) / 25 + g.normal(0, 0.05))
    f = dg.detect_reward_hacking(recs)
    assert f is not None and "stalls" in f.evidence["objective/gold_reward"]
    # gold rising with the proxy is what RLHF should do
    recs = with_(healthy(), "objective/gold_reward", lambda i, r: i / 40 + g.normal(0, 0.05))
    with_(recs, "objective/proxy_reward", lambda i, r: i / 20 + g.normal(0, 0.05))
    assert dg.detect_reward_hacking(recs) is None


def test_negative_kl():
    g = np.random.default_rng(5)
    recs = with_(healthy(), "objective/kl", lambda i, r: -0.3 - 0.01 * i + g.normal(0, 0.05))
    f = dg.detect_negative_kl(recs)
    assert f is not None and "min" in f.evidence["objective/kl"]
    # a KL ≈ 0 whose k1 estimates dip below zero by noise only is fine
    recs = with_(healthy(), "objective/kl", lambda i, r: g.normal(0.0, 0.05))
    assert dg.detect_negative_kl(recs) is None


def test_entropy_collapse_abrupt_and_harmful():
    recs = with_(healthy(rlhf=False), "losses/entropy", lambda i, r: 0.69 if i < 20 else 1e-4)
    with_(recs, "charts/episodic_return", lambda i, r: 10.0 + i * 0.01, start=21)
    f = dg.detect_entropy_collapse(recs)
    assert f is not None and f.iterations[0] == 20
    assert "removed" in f.evidence["losses/entropy"]


def test_entropy_collapse_gradual_convergence_is_not():
    # a policy that becomes deterministic gradually while return keeps its best: a solved task
    recs = with_(healthy(rlhf=False), "losses/entropy", lambda i, r: 0.69 * math.exp(-i / 8))
    assert dg.detect_entropy_collapse(recs) is None


def test_mode_collapse_in_samples():
    recs = healthy()
    with_(recs, "samples", lambda i, r: [{"prompt": "p", "response": "great great great!"}] * 3,
          start=N // 2)
    f = dg.detect_entropy_collapse(recs)
    assert f is not None and "same text" in f.evidence["samples"]


def test_value_failure():
    g = np.random.default_rng(6)
    recs = with_(healthy(), "losses/explained_variance", lambda i, r: -0.05 + g.normal(0, 0.02))
    # ... while the value loss still falls, the critic is learning: not (yet) a failure
    assert dg.detect_value_failure(recs) is None
    with_(recs, "losses/value_loss", lambda i, r: 3.0 + g.normal(0, 0.1))
    f = dg.detect_value_failure(recs)
    assert f is not None and min(f.iterations) >= int(N * 0.2)
    # explained variance ≤ 0 only at the start, while the critic learns, is normal
    recs = with_(healthy(), "losses/explained_variance", lambda i, r: -0.5 + i / 10 if i < 12 else 0.9)
    assert dg.detect_value_failure(recs) is None
    # value loss exploding with a poor critic
    recs = with_(healthy(), "losses/value_loss", lambda i, r: 1.0 * 1.2 ** i)
    with_(recs, "losses/explained_variance", lambda i, r: 0.2 + g.normal(0, 0.02))
    f = dg.detect_value_failure(recs)
    assert f is not None and "losses/value_loss" in f.evidence


def test_report_and_plot_name_each_finding(tmp_path):
    recs = with_(healthy(), "losses/approx_kl", lambda i, r: 0.01 * math.exp((i - 30) / 4), start=30)
    with_(recs, "losses/explained_variance", lambda i, r: -0.05)
    with_(recs, "losses/value_loss", lambda i, r: 3.0)
    findings = dg.diagnose(recs)
    assert names(findings) >= {"kl_blowup", "value_failure"}
    text = dg.report(findings, recs)
    assert "KL blow-up" in text and "Value function failing" in text and "Try:" in text
    import matplotlib
    matplotlib.use("Agg")
    fig = dg.plot_findings(recs, findings)
    assert len(fig.axes) >= 4
    fig.savefig(tmp_path / "f.png")


# ------------------------------------------------------------------ the command line

def _write(path, recs):
    with MetricsLog(path) as log:
        for r in recs:
            log.write(r)
    return path


def test_cli_exit_codes_and_json(tmp_path, capsys):
    ok = _write(tmp_path / "ok.jsonl", healthy())
    bad = _write(tmp_path / "bad.jsonl",
                 with_(with_(healthy(), "losses/explained_variance", lambda i, r: -0.05),
                       "losses/value_loss", lambda i, r: 3.0))
    assert dg.cli_main([str(ok)]) == 0
    assert "No problem found." in capsys.readouterr().out
    assert dg.cli_main([str(bad), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["healthy"] is False and out["findings"][0]["name"] == "value_failure"
    assert out["findings"][0]["iterations"] and out["findings"][0]["fix"]
    assert dg.cli_main([str(tmp_path / "missing.jsonl")]) == 2
    (tmp_path / "text.jsonl").write_text("iteration,return\n1,2\n3,4\n")
    assert dg.cli_main([str(tmp_path / "text.jsonl")]) == 2
    (tmp_path / "empty.jsonl").write_text("")
    assert dg.cli_main([str(tmp_path / "empty.jsonl")]) == 2
    (tmp_path / "list.jsonl").write_text("[1, 2]\n[3]\n")
    assert dg.cli_main([str(tmp_path / "list.jsonl")]) == 2
    capsys.readouterr()
    assert dg.cli_main(["--help"]) == 0
    assert "exit status" in capsys.readouterr().out


def test_cli_through_package_main(tmp_path, capsys):
    from ppo_core.__main__ import main

    bad = _write(tmp_path / "bad.jsonl", with_(with_(healthy(), "losses/explained_variance",
                                                     lambda i, r: -0.05), "losses/value_loss",
                                               lambda i, r: 3.0))
    assert main(["doctor", str(bad), "--plot", str(tmp_path / "p.png")]) == 1
    assert (tmp_path / "p.png").stat().st_size > 0


def test_bad_input_to_diagnose():
    with pytest.raises(ValueError, match="log"):
        dg.diagnose(42)
    with pytest.raises(ValueError, match="no records"):
        dg.diagnose([])


# ------------------------------------------------------------------ the bank of real logs

def _manifest():
    path = BANK / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


MANIFEST = _manifest()


def test_bank_exists_and_is_small():
    assert MANIFEST, "tests/log_bank/manifest.json is missing: run tests/log_bank/make_bank.py"
    assert any(v.get("healthy", not v["planted"]) for v in MANIFEST.values()), "the bank needs healthy logs"
    assert any(v["planted"] for v in MANIFEST.values()), "the bank needs failing logs"
    for name in MANIFEST:
        path = BANK / f"{name}.jsonl"
        assert path.exists(), path
        # the largest: rlhf_hacking_long, 150 iterations whose 4 samples grow into '!' loops
        assert path.stat().st_size < 300_000, f"{path} is {path.stat().st_size} bytes"
    planted = {p for v in MANIFEST.values() for p in v["planted"]}
    assert planted <= set(dg.SIGNATURES), planted - set(dg.SIGNATURES)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_bank_log(name):
    """Every planted failure is named; a healthy log gets nothing at all."""
    entry = MANIFEST[name]
    findings = dg.diagnose(BANK / f"{name}.jsonl")
    found = names(findings)
    if entry.get("healthy", not entry["planted"]):
        assert found == set(), dg.report(findings)
    else:
        missing = set(entry["planted"]) - found
        assert not missing, f"{name}: missing {missing}\n{dg.report(findings)}"
        unexpected = found - set(entry["planted"]) - set(entry.get("also", []))
        assert not unexpected, f"{name}: unexpected {unexpected}\n{dg.report(findings)}"
    assert dg.cli_main([str(BANK / f"{name}.jsonl")]) == (1 if found else 0)


def test_unfrozen_reference_is_pointed_out():
    g = np.random.default_rng(7)
    recs = with_(healthy(), "objective/kl", lambda i, r: 0.0)
    with_(recs, "objective/proxy_reward", lambda i, r: i / 20 + g.normal(0, 0.05))
    with_(recs, "objective/gold_reward", lambda i, r: min(i, 20) / 25 + g.normal(0, 0.05))
    f = dg.detect_reward_hacking(recs)
    assert f is not None and "frozen" in f.evidence["objective/kl"]
    # a KL that is exactly 0 because β = 0 and the log simply has no reference says nothing
    with_(recs, "objective/beta", lambda i, r: 0.0)
    assert "frozen" not in dg.detect_reward_hacking(recs).evidence["objective/kl"]


def test_kl_blowup_per_token_beyond_entropy():
    g = np.random.default_rng(8)
    recs = with_(healthy(), "objective/beta", lambda i, r: 0.0)
    with_(recs, "objective/kl_per_token", lambda i, r: 0.15 * i + g.normal(0, 0.1))   # → 9 nats
    f = dg.detect_kl_blowup(recs)
    assert f is not None and "objective/kl_per_token" in f.evidence
    assert min(f.iterations) > 0                        # only where KL per token > entropy
    # a KL per token that stays well below the entropy is a policy near its reference
    with_(recs, "objective/kl_per_token", lambda i, r: 0.002 * i + g.normal(0, 0.01))
    assert dg.detect_kl_blowup(recs) is None


# ------------------------------------------------------------------ scale and bad logs (issue 13)

from ppo_core.diagnostics.reader import NoKnownMetrics, read_for_doctor  # noqa: E402
from ppo_core.diagnostics.signals import RunningMedian  # noqa: E402


def test_running_median_equals_numpy_median():
    g = np.random.default_rng(0)
    for xs in (g.normal(size=301), g.integers(0, 4, size=200).astype(float), np.ones(10)):
        m = RunningMedian()
        for j, x in enumerate(xs):
            m.add(float(x))
            assert m.median() == float(np.median(xs[:j + 1])), j


def _destabilising_reference(records):
    """The detector as it was, with a median of the whole prefix at every step (O(n²))."""
    from ppo_core.diagnostics.signals import (CLIPFRAC_FACTOR, DROP_FRACTION, MIN_WINDOW, SIG,
                                              SPIKE_FACTOR, SPIKE_FLOOR, _perf, _series, _window,
                                              noise)
    it, ak = _series(records, "losses/approx_kl")
    pkey, pit, px = _perf(records)
    clip = dict(zip(*_series(records, "losses/clipfrac")))
    clip_off = len(clip) > 0 and all(v == 0 for v in clip.values())
    sd, w, hits = noise(px), _window(px.size, 0.05), []
    for j in range(MIN_WINDOW, ak.size):
        base = float(np.median(ak[:j]))
        if not (ak[j] >= SPIKE_FACTOR * max(base, 1e-12) and ak[j] > SPIKE_FLOOR):
            continue
        t = int(it[j])
        if clip and not clip_off:
            c_prev = [clip[i] for i in it[:j] if i in clip]
            c_base = float(np.median(c_prev)) if c_prev else 0.0
            if not (t in clip and clip[t] >= CLIPFRAC_FACTOR * max(c_base, 1e-3)):
                continue
        before, after = px[(pit <= t) & (pit > t - w)], px[(pit > t) & (pit <= t + w)]
        hist = px[pit <= t]
        if before.size < 2 or after.size < 2:
            continue
        drop = float(np.mean(before) - np.mean(after))
        se = sd * math.sqrt(1 / before.size + 1 / after.size)
        span = float(hist.max() - hist.min())
        if drop > SIG * se and drop >= DROP_FRACTION * span and span > 0:
            hits.append(t)
    return hits


@pytest.mark.parametrize("seed", range(6))
def test_destabilising_update_in_n_log_n_finds_what_the_quadratic_rule_found(seed):
    g = np.random.default_rng(seed)
    recs = healthy(n=120, seed=seed, rlhf=False)
    for t in g.choice(np.arange(10, 110), size=4, replace=False):
        recs[t]["losses/approx_kl"] = 0.3 + g.random()
        recs[t]["losses/clipfrac"] = 0.5
        for k in range(t + 1, min(t + 8, 120)):
            recs[k]["charts/episodic_return"] -= 300
    if seed % 2:                                       # gaps: metrics missing on some records
        for r in recs[::7]:
            r.pop("losses/clipfrac")
    f = dg.detect_destabilising_update(recs)
    assert (f.iterations if f else []) == _destabilising_reference(recs)
    assert f is not None or seed % 2


def test_the_doctor_is_not_quadratic_in_the_length_of_the_log():
    """40 000 iterations of noisy approx_kl with thousands of candidate spikes: the detector
    that took the median of every prefix needed 42 s (measured on a shared 2-core machine),
    with the same findings; now about a second."""
    import time

    n = 40_000
    g = np.random.default_rng(0)
    ak = 0.01 * np.exp(g.normal(0, 1.5, n))
    recs = [{"iteration": i, "losses/approx_kl": float(ak[i]),
             "losses/clipfrac": float(min(0.9, 10 * ak[i])),
             "charts/episodic_return": 100 * math.sin(i / 50) + float(g.normal()),
             "losses/entropy": 1.0, "losses/explained_variance": 0.5} for i in range(n)]
    t0 = time.perf_counter()
    found = dg.diagnose(recs)
    assert time.perf_counter() - t0 < 15
    assert "destabilising_update" in names(found)


def test_the_reader_streams_and_keeps_only_what_the_detectors_read(tmp_path):
    recs = healthy()
    for r in recs:
        r["perf/blob"] = "x" * 500                     # what makes real logs large
        r["samples"] = [{"prompt": "p" * 100, "response": f"r{r['iteration']}", "gold": 0.1}]
    recs[5]["perf/iteration_s"] = float("inf")         # non-finite: kept, the doctor names it
    path = _write(tmp_path / "big.jsonl", recs)
    slim = read_for_doctor(path)
    assert len(slim) == len(recs)
    assert "perf/blob" not in slim[0] and "perf/iteration_s" in slim[5]
    assert "samples" not in slim[0] and slim[-1]["samples"] == [f"r{recs[-1]['iteration']}"]
    assert names(dg.diagnose(path)) == names(dg.diagnose(recs)) == {"non_finite"}


def test_a_log_with_none_of_the_known_metrics_is_never_healthy(tmp_path, capsys):
    unknown = tmp_path / "other.jsonl"
    unknown.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n')
    with pytest.raises(NoKnownMetrics, match="none of the metrics the doctor knows"):
        dg.diagnose(unknown)
    assert dg.cli_main([str(unknown)]) == 3
    err = capsys.readouterr().err
    assert "No problem found" not in err and "losses/approx_kl" in err and "step, loss" in err
    text = tmp_path / "text.jsonl"                       # strings where numbers belong
    text.write_text("".join(json.dumps({"iteration": i, "losses/approx_kl": "0.01",
                                        "charts/episodic_return": "20"}) + "\n" for i in range(9)))
    assert dg.cli_main([str(text)]) == 3
    assert "losses/approx_kl holds str values, not numbers" in capsys.readouterr().err
    # with some numbers left, it judges those and says what it could not judge
    mixed = healthy()
    for r in mixed:
        r["losses/entropy"] = "high"
    out = _write(tmp_path / "mixed.jsonl", mixed)
    assert dg.cli_main([str(out)]) == 0
    captured = capsys.readouterr()
    assert "losses/entropy holds str values" in captured.out + captured.err


def test_plot_works_on_any_log_it_can_read(tmp_path, capsys):
    import matplotlib
    matplotlib.use("Agg")
    unknown = tmp_path / "other.jsonl"
    unknown.write_text('{"step": 1, "loss": 0.5}\n')
    assert dg.cli_main([str(unknown), "--plot", str(tmp_path / "u.png")]) == 3
    assert (tmp_path / "u.png").stat().st_size > 0
    zeros = [{"iteration": i, "losses/approx_kl": 0.0} for i in range(10)]   # no panel to draw
    fig = dg.plot_findings(zeros)
    assert len(fig.axes) == 1
    assert dg.cli_main([str(_write(tmp_path / "z.jsonl", zeros)), "--plot",
                        str(tmp_path / "z.png")]) == 0
    assert (tmp_path / "z.png").stat().st_size > 0


def test_a_binary_file_is_named_in_the_error(tmp_path, capsys):
    path = tmp_path / "weights.jsonl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe" * 50)
    assert dg.cli_main([str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "binary" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="weights.jsonl"):
        dg.diagnose(path)


@pytest.mark.parametrize("bad", ["nan", "inf", "-1", "0", "abc"])
def test_kl_target_must_be_a_positive_finite_number(bad, capsys):
    assert dg.cli_main([str(BANK / "rlhf_healthy.jsonl"), "--kl-target", bad]) == 2
    assert "--kl-target" in capsys.readouterr().err
    with pytest.raises(ValueError, match="kl_target"):
        dg.diagnose(healthy(), kl_target=float(bad) if bad != "abc" else bad)


def test_reads_stable_baselines3_progress_csv(tmp_path):
    """SB3's CSV logger: its keys are mapped to the course's (entropy_loss is −entropy)."""
    rows = ["time/iterations,rollout/ep_rew_mean,train/approx_kl,train/clip_fraction,"
            "train/entropy_loss,train/explained_variance,train/value_loss"]
    g = np.random.default_rng(0)
    for i in range(1, 61):
        kl = 0.01 * math.exp(g.normal(0, 0.3)) if i < 40 else 0.01 * math.exp((i - 40) / 3)
        rows.append(f"{i},{20 + 4 * i + g.normal(0, 3):.3f},{kl:.5f},{0.1 + g.normal(0, 0.01):.3f},"
                    f"{-0.69 + i / 200:.4f},{min(0.9, i / 30):.3f},{5 * math.exp(-i / 20):.3f}")
    rows.insert(5, "4,,,,,,")                        # SB3 leaves blanks
    path = tmp_path / "progress.csv"
    path.write_text("\n".join(rows) + "\n")
    records = read_for_doctor(path)
    assert records[0]["iteration"] == 1 and records[0]["losses/entropy"] == pytest.approx(0.685)
    found = dg.diagnose(path)
    assert names(found) == {"kl_blowup"}
    assert min(next(f for f in found if f.name == "kl_blowup").iterations) >= 40


def test_reads_trl_trainer_state_log_history(tmp_path):
    """TRL's trainer_state.json: log_history entries, TRL's PPO keys mapped to the course's."""
    g = np.random.default_rng(1)
    history = []
    for i in range(1, 61):
        history.append({"step": i, "episode": 64 * i, "objective/kl": 0.3 * i + g.normal(0, 0.1),
                        "objective/entropy": 30 - 0.2 * i, "objective/scores": 0.05 * i,
                        "objective/rlhf_reward": 0.05 * i - 0.015 * i,
                        "policy/approxkl_avg": 0.02 * math.exp(g.normal(0, 0.3)),
                        "policy/clipfrac_avg": 0.1, "loss/policy_avg": -0.01,
                        "loss/value_avg": 0.5, "lr": 3e-6})
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps({"global_step": 60, "log_history": history}))
    records = read_for_doctor(path)
    assert records[0]["iteration"] == 1 and records[0]["losses/approx_kl"] > 0
    assert records[0]["losses/entropy"] == 30 - 0.2 and "objective/kl" in records[0]
    assert dg.cli_main([str(path)]) in (0, 1)
    (tmp_path / "not_state.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="log_history"):
        dg.diagnose(tmp_path / "not_state.json")

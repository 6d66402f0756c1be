"""Read a metrics log, name the training failure, cite the iterations, suggest a fix (ch. 06).

`diagnose(log)` runs one detector per failure signature on the records of a JSONL log
(`ppo_core.metrics.read_log`, keys as in the README) and returns a list of `Finding`s:

    name               what it looks like in the log
    non_finite         a NaN/inf value, or the trainer's own `*/diverged` flag
    kl_blowup          per-update approx_kl or the KL to the reference running away
    destabilising_update  approx_kl and clipfrac spike, then return / reward drops
    over_regularisation   β > 0, KL to the reference stays ≈ 0, reward does not move
    reward_hacking     proxy reward rises while gold reward stalls or falls
    negative_kl        the KL estimate to the reference is negative beyond its noise
    entropy_collapse   entropy falls to ≈ 0 abruptly, or to a worse mode, or samples repeat
    value_failure      explained variance ≤ 0, or value loss exploding with it

An empty list means "no problem found"; `report(findings, records)` then prints the
headline numbers instead. A log that holds none of the metrics the detectors read raises
`NoKnownMetrics` instead (never "no problem found"). `plot_findings(records, findings)` draws
the metrics with the flagged iterations shaded. `python -m ppo_core doctor LOG [--json]` is
`cli_main` (exit status 0 healthy, 1 problems, 2 unreadable input, 3 nothing to judge).

Logs are read line by line, keeping only what the detectors read (`reader.read_for_doctor`):
the course's JSONL, Stable-Baselines3's `progress.csv` and TRL's `trainer_state.json`, their
keys mapped to the course's. Every detector is linear or O(n log n) in the iterations.

Thresholds are relative to the run's own numbers wherever a run has numbers to compare with:

* the *noise* of a metric, σ, is the robust spread of its iteration-to-iteration changes,
  σ = 1.4826 · MAD(Δx) / √2 (a trend does not inflate it, one spike does not either);
* a change is *significant* when it exceeds `SIG` = 3 standard errors, SE = σ·√(1/n₁ + 1/n₂)
  for a difference of two window means of n₁ and n₂ iterations;
* *early* is the first `EARLY_FRAC` = 20 % of the iterations (at least 3), *late* the last
  `LATE_FRAC` = third;
* a *spike* of approx_kl is `SPIKE_FACTOR` = 5× the median of every earlier update.

A few anchors are not relative, because a run that fails from its first update has no
healthy numbers to compare with; all are unitless:

* `LOG_RATIO_LIMIT` = log(1.3) ≈ 0.26: this course's own "certainly broken" alarm, not a
  published trust-region boundary. approx_kl is a mean log-ratio over the sampled actions;
  log(1 + ε) with ε = 0.3, the widest clip range in common use, is where the clip would act
  on a single sample, and a *mean* that large is 5–25× the per-update KL that PPO
  implementations aim for (target KLs of 0.01–0.05: Spinning Up's target_kl = 0.01, CleanRL's
  example 0.015, the PPO paper's adaptive d_targ of 0.003–0.03). A run with a `target_kl`
  should be judged against that target first;
* `SPIKE_FLOOR` = LOG_RATIO_LIMIT / 4 ≈ 0.066: a relative spike of approx_kl must also exceed
  this to count as destabilising (healthy updates sit at 0.01–0.03 and wobble 5× unharmed);
* `ENTROPY_FLOOR` = 5 % of the run's initial entropy counts as "collapsed";
* `KL_NEAR_ZERO` = 10 %: a KL to the reference below 10 % of the policy's own entropy is ≈ 0
  (the policy has moved by a small fraction of the randomness it has);
* `KL_ENTROPY_FACTOR` = 2: a KL per token above twice the entropy per token means the
  reference's cross-entropy on the samples, H + KL, is over 3× the policy's own: text the
  reference would practically never write.

Each detector's docstring states its rule. The detectors read only standard keys, so one
doctor serves the bandit, CartPole and the RLHF trainer.
"""

from .cli import cli_main
from .detectors import (DETECTORS, detect_destabilising_update, detect_entropy_collapse,
                        detect_kl_blowup, detect_negative_kl, detect_non_finite,
                        detect_over_regularisation, detect_reward_hacking, detect_value_failure)
from .figure import plot_findings
from .reader import NoKnownMetrics, read_for_doctor
from .report import diagnose, headline, report
from .signals import SIGNATURES, Finding, noise, smooth

__all__ = ["Finding", "diagnose", "headline", "report", "plot_findings", "cli_main",
           "read_for_doctor", "NoKnownMetrics",
           "noise", "smooth",
           "DETECTORS", "SIGNATURES",
           "detect_non_finite", "detect_kl_blowup", "detect_destabilising_update",
           "detect_over_regularisation", "detect_reward_hacking", "detect_negative_kl",
           "detect_entropy_collapse", "detect_value_failure"]

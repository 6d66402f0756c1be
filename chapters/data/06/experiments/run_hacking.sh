#!/usr/bin/env bash
# Issue 15's reward-hacking runs: the biased reward model (annotators who like '!'),
# β = 0 on three seeds and β = 0.1 on two, 150 PPO iterations each, one torch thread,
# two runs at a time. Logs: chapters/data/06/experiments/runs/<tag>/beta<β>_seed<S>.jsonl (+ .out).
#
#   bash chapters/data/06/experiments/run_hacking.sh TAG [extra rlhf flags...]     e.g.
#   bash chapters/data/06/experiments/run_hacking.sh lr1e-4
#   bash chapters/data/06/experiments/run_hacking.sh lr3e-4 --lr 3e-4
#
# Needs HF_HUB_OFFLINE=1 (and PPO_COURSE_CACHE if not the repo's).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=../../../..
tag=$1; shift
out=runs/$tag
mkdir -p "$out"
run() {  # beta seed
  "$ROOT"/.venv/bin/python -m ppo_core rlhf --model tiny --reward-bias exclamation --steps 150 \
    --beta "$1" --seed "$2" --threads 1 --no-progress --log "$out/beta$1_seed$2.jsonl" "${@:3}" \
    > "$out/beta$1_seed$2.out" 2>&1
}
run 0 0 "$@" & run 0 1 "$@" & wait
run 0 2 "$@" & run 0.1 0 "$@" & wait
run 0.1 1 "$@"
"$ROOT"/.venv/bin/python summarise.py "$out"/beta*_seed*.jsonl

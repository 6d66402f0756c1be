#!/usr/bin/env bash
# One short, prepared check of the RLHF trainer's CUDA path, for a session that has a GPU
# machine (the device tool's `run`). It prints the machine, then runs
#   1. caches    verify the carried tiny GPT-2 and reward model (build them if missing) and
#                build the offline 124M-shape GPT-2 (500 steps, on CUDA: the learner's build);
#   2. pytest    tests/test_gpu.py: fp32 alignment, bf16 dtypes and error, a 3-iteration bf16
#                run, the 124M shape's memory at 128 episodes × 24 tokens, device hand-offs;
#   3. gpt2      benchmarks/rlhf_throughput.py --model gpt2 (128 prompts × 24 tokens, bf16);
#   4. tiny      benchmarks/rlhf_throughput.py --model tiny;
#   5. gpt2_fp32 the gpt2 benchmark again with --bf16 off, only if time is left.
# Each step runs under `timeout`, capped by what is left of an overall budget
# (GPU_CHECK_BUDGET_S, default 420 s), so one hang cannot eat the device time. Everything is
# written under $OUT (7 files at most): one .txt per step and summary.txt; the last lines
# printed are a short summary.
#
# How to call it
# --------------
# 1. Here (the development machine, which can reach the package registries), once, in the
#    repository root:
#        PYTHON=/tmp/venv0/bin/python bash benchmarks/gpu_check.sh prepare
#    It downloads into .whl/ (gitignored) the wheels the bare GPU machine lacks or has in
#    another version: vaderSentiment (missing there), transformers and tokenizers at the
#    versions of requirements.txt (the machine has transformers 5.17 and tokenizers 0.23.2),
#    about 17 MB; it builds, if needed, the tiny GPT-2 and reward model in
#    .cache/ppo_course/ (gitignored, about 4 MB each) and prints the exact `carry` list.
#    The model cache cannot travel whole (.cache is ~60 MB with old builds, the limit is
#    64 MiB for everything), and the 124M-shape model (~350 MB) is built there instead.
# 2. With the device tool:
#        run(command="bash benchmarks/gpu_check.sh", timeout_s=480,
#            carry=[".whl", ".cache/ppo_course/tiny-gpt2-<key>", ".cache/ppo_course/reward-none-<key>"])
#    using the carry list that `prepare` printed. The GPU machine has no network at all
#    (no model hub, no package registry): HF_HUB_OFFLINE=1 is set here, and a missing cache
#    is rebuilt on its CPU (about a minute each), which the budget allows for.
#    Then call give_back unless you rerun at once. The files come back under files_at.
#
# Knobs: OUT (default /tmp/gpu_check_out), PYTHON (default python3: on the GPU machine the
# one that holds PyTorch), GPU_CHECK_BUDGET_S (default 420), GPU_CHECK_SYSTEM_PKGS=1 (use the
# machine's transformers/tokenizers even when .whl has the pinned ones).

set -u
cd "$(dirname "$0")/.." || exit 1
REPO=$PWD
PY=${PYTHON:-python3}
SITE=${GPU_CHECK_SITE:-/tmp/site}    # where the carried wheels are installed

pin() {   # version of a package pinned in requirements.txt
    grep -i "^$1==" requirements.txt | head -1 | cut -d= -f3
}

if [ "${1:-}" = "prepare" ]; then
    mkdir -p .whl
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl \
        "vaderSentiment==$(pin vaderSentiment)" "transformers==$(pin transformers)" \
        "tokenizers==$(pin tokenizers)" || exit 1
    carry=$(HF_HUB_OFFLINE=1 "$PY" - <<'EOF'
import os
from ppo_core.lm import models, reward, text
repo = os.getcwd()
paths = [models.tiny_gpt2_path(), reward.reward_model_path(None)]
print(" ".join(os.path.relpath(p, repo) for p in paths))
EOF
) || exit 1
    du -shc .whl $carry
    printf 'carry: [".whl"'
    for c in $carry; do printf ', "%s"' "$c"; done
    printf ']\n'
    exit 0
fi

OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/summary.txt") 2>&1
TEE_PID=$!
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PPO_COURSE_REQUIRE_CUDA=1     # tests/test_gpu.py fails, not skips, if torch sees no GPU
export PPO_COURSE_BUILD_THREADS=${PPO_COURSE_BUILD_THREADS:-8}
BUDGET=${GPU_CHECK_BUDGET_S:-420}
START=$SECONDS
RESULTS=()

step() {   # step NAME LIMIT_S CMD...: run under timeout, capped by the budget left
    local name=$1 limit=$2 left t rc t0
    shift 2
    left=$((BUDGET - (SECONDS - START)))
    if [ "$left" -lt 30 ]; then
        echo "=== $name: skipped, ${left} s of the budget left"
        RESULTS+=("$name: skipped (budget)")
        return 0
    fi
    t=$((limit < left ? limit : left))
    echo "=== $name (timeout ${t} s, $((SECONDS - START)) s into the check): $*"
    t0=$SECONDS
    timeout -k 10 "$t" "$@" 2>&1 | tee "$OUT/$name.txt"
    rc=${PIPESTATUS[0]}
    echo "=== $name: rc=$rc after $((SECONDS - t0)) s"
    RESULTS+=("$name: rc=$rc ($((SECONDS - t0)) s)$( { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && echo ' TIMED OUT')")
    return 0
}

# ---- 0. the machine and the Python packages ------------------------------------------------
{
    date -u
    if command -v nvidia-smi >/dev/null; then nvidia-smi || echo "nvidia-smi failed"; else echo "no nvidia-smi"; fi
    uname -m
    "$PY" -V
} 2>&1 | tee "$OUT/env.txt"
if ls .whl/*.whl >/dev/null 2>&1; then
    wheels=(.whl/*.whl)
    if [ "${GPU_CHECK_SYSTEM_PKGS:-0}" = 1 ]; then
        wheels=(.whl/vaderSentiment-*.whl)
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "${wheels[@]}" 2>&1 | tail -3
    if ! PYTHONPATH="$SITE" "$PY" -c "import transformers, tokenizers" 2>/dev/null; then
        echo "the pinned transformers/tokenizers do not import here: using the machine's"
        rm -rf "$SITE"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --target "$SITE" .whl/vaderSentiment-*.whl 2>&1 | tail -3
    fi
fi
export PYTHONPATH=$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}
"$PY" - <<'EOF' 2>&1 | tee -a "$OUT/env.txt"
import torch, transformers, tokenizers
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__} "
      f"from {transformers.__file__}, tokenizers {tokenizers.__version__}")
print(f"cuda available {torch.cuda.is_available()}", end="")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f": {p.name}, {p.total_memory / 2**30:.1f} GiB, bf16 supported "
          f"{torch.cuda.is_bf16_supported()}, TF32 matmul {torch.backends.cuda.matmul.allow_tf32}")
else:
    print()
try:
    import vaderSentiment  # noqa: F401
    print("vaderSentiment importable")
except ImportError as e:
    print(f"vaderSentiment MISSING: {e} (run `bash benchmarks/gpu_check.sh prepare` and carry .whl)")
EOF

# ---- 1. caches: the carried ones verified, the 124M shape built on CUDA -----------------------
step caches 200 "$PY" - <<'EOF'
import time
t = time.time()
from ppo_core.lm import reward, text
for name, fn in (("tiny GPT-2", models.tiny_gpt2_path), ("reward model", lambda: reward.reward_model_path(None)),
                 ("124M-shape GPT-2", models.gpt2_small_path)):
    t0 = time.time()
    p = fn()
    print(f"{name}: {p.name} ready in {time.time() - t0:.1f} s")
print(f"caches ready after {time.time() - t:.1f} s")
EOF

# ---- 2. the CUDA tests -------------------------------------------------------------------------
step pytest_gpu 240 "$PY" -m pytest -v -rA -s -p no:cacheprovider tests/test_gpu.py

# ---- 3-5. throughput -----------------------------------------------------------------------------
step bench_gpt2 150 "$PY" benchmarks/rlhf_throughput.py --model gpt2
step bench_tiny 90 "$PY" benchmarks/rlhf_throughput.py --model tiny
step bench_gpt2_fp32 120 "$PY" benchmarks/rlhf_throughput.py --model gpt2 --bf16 off

# ---- summary -----------------------------------------------------------------------------------
echo
echo "===== gpu_check summary ($((SECONDS - START)) s) ====="
grep -h "cuda available\|^torch " "$OUT/env.txt"
for r in "${RESULTS[@]}"; do echo "$r"; done
grep -hE "[0-9]+ (passed|failed|skipped|errors?)\b" "$OUT/pytest_gpu.txt" 2>/dev/null | tail -1
grep -hE "^(PASSED|FAILED|ERROR)|bf16 vs fp32|124M shape" "$OUT/pytest_gpu.txt" 2>/dev/null
for b in bench_gpt2 bench_tiny bench_gpt2_fp32; do
    [ -f "$OUT/$b.txt" ] || continue
    echo "-- $b"
    grep -hE "^device|^mean of|^peak|^ratio" "$OUT/$b.txt"
    grep -hE "Error|error" "$OUT/$b.txt" | tail -2
done
exec 1>&- 2>&-        # let tee finish summary.txt before the machine collects $OUT
wait "$TEE_PID" 2>/dev/null

#!/usr/bin/env bash
# The GPU check: kdlab's CUDA path proven in one run of under 8 minutes (docs/performance.md,
# "The GPU check").
#
#   bash benchmarks/gpu_check.sh OUT_DIR
#
# On a fresh machine: clone the repository, then run the line above from anywhere. Without
# .venv/bin/python (and without $PYTHON set) the script first runs `make install` (pinned torch and
# the test extras; needs the package index, and is not counted in the 8 minutes). $PYTHON picks
# another interpreter that has kdlab installed with its test extras.
#
# Without CUDA (torch.cuda.is_available() is False) it prints one line saying it skipped and exits 0.
# With CUDA it runs three phases, each under its own `timeout` so a hang cannot eat the budget:
#   1. tests   pytest -m gpu (tests/train/test_gpu.py: bf16 autocast vs float32, channels-last,
#              fused Adam, torch.compile, the teacher cache on the device, a 1-process NCCL group,
#              resume bit-identical with deterministic: true)                   at most 200 s
#   2. lab     python -m benchmarks.gpu_lab: the 224x224 cats-vs-dogs lab at batch 32, teacher /
#              scratch / distill ms per step beside the seed's 95 / 64 / 74 ms   at most 110 s
#   3. compile the same with train.compile=true                                 at most 140 s
# and writes into OUT_DIR: gpu-tests.xml and gpu-tests.log (phase 1), gpu-lab.json and
# gpu-lab-compile.json (phases 2 and 3, with their logs), nvidia-smi.txt, and gpu-check.json
# (each phase's exit status and seconds, the figures and whether the targets were met).
# The exit status is 0 when every phase passed, 1 otherwise; the summary is printed at the end.
set -euo pipefail

if [[ $# -ne 1 || $1 == -* ]]; then
    echo "usage: bash benchmarks/gpu_check.sh OUT_DIR   (the folder the results are written to)" >&2
    exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$1"
OUT="$(cd "$1" && pwd)"
cd "$ROOT"

if [[ -z ${PYTHON:-} ]]; then
    PYTHON="$ROOT/.venv/bin/python"
    if [[ ! -x $PYTHON ]]; then
        echo "gpu_check: no $PYTHON yet: running make install"
        timeout --kill-after=10 1200 make install
    fi
fi
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "gpu_check: $PYTHON not found: run 'make install' or set PYTHON to an interpreter with kdlab" >&2
    exit 2
fi

cuda="$(timeout --kill-after=5 120 "$PYTHON" -c 'import torch; print(torch.cuda.is_available())' || true)"
if [[ $cuda == False ]]; then
    echo "gpu_check: skipped: no CUDA GPU here (torch.cuda.is_available() is False); nothing was run"
    exit 0
elif [[ $cuda != True ]]; then
    echo "gpu_check: '$PYTHON -c \"import torch\"' failed: run 'make install' (or set PYTHON)" >&2
    exit 2
fi

nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
WORK="$(mktemp -d "${TMPDIR:-/tmp}/kdlab-gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT  # generated images and pytest's folders, even after a phase was killed
export TMPDIR="$WORK"
declare -a NAMES=() CODES=() TIMES=()

phase() {  # phase NAME LIMIT_S LOG command...: run under timeout, keep going on failure
    local name=$1 limit=$2 log=$3 start=$SECONDS rc
    shift 3
    echo "== $name (at most ${limit} s): $*"
    set +e
    timeout --kill-after=15 "$limit" "$@" 2>&1 | tee "$OUT/$log"
    rc=${PIPESTATUS[0]}
    set -e
    NAMES+=("$name:$log")
    CODES+=("$rc")
    TIMES+=($((SECONDS - start)))
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        echo "== $name: stopped after ${limit} s (timeout)"
    fi
}

phase tests 200 gpu-tests.log "$PYTHON" -m pytest -m gpu -q -rs -p no:cacheprovider --junitxml "$OUT/gpu-tests.xml"
phase lab 110 gpu-lab.log "$PYTHON" -m benchmarks.gpu_lab --out "$OUT"
phase compile 140 gpu-lab-compile.log "$PYTHON" -m benchmarks.gpu_lab --out "$OUT" --compile

phases=""
for i in "${!NAMES[@]}"; do
    phases+="${NAMES[$i]}=${CODES[$i]}:${TIMES[$i]} "
done
"$PYTHON" - "$OUT" "$SECONDS" $phases <<'EOF'
"""Write gpu-check.json and print the summary."""
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

out, total = Path(sys.argv[1]), int(sys.argv[2])
phases = {}
for item in sys.argv[3:]:
    name, rest = item.split("=")
    name, log = name.split(":")
    rc, seconds = rest.split(":")
    phases[name] = {"exit_status": int(rc), "seconds": int(seconds), "log": log}
summary = {"total_seconds": total, "phases": phases}
lines = [f"gpu_check summary ({total} s in all; results in {out}):"]
xml = out / "gpu-tests.xml"
if xml.is_file():
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    summary["tests"] = counts
    failed = [
        case.get("name")
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    summary["tests"]["failed"] = failed
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    lines.append(
        f"  tests: {passed} passed, {counts['failures'] + counts['errors']} failed, {counts['skipped']} skipped"
        + (f" ({', '.join(failed)})" if failed else "")
    )
for name, file in (("lab", "gpu-lab.json"), ("compile", "gpu-lab-compile.json")):
    path = out / file
    if not path.is_file():
        lines.append(f"  {name}: no {file} (exit status {phases.get(name, {}).get('exit_status')})")
        continue
    r = json.loads(path.read_text())
    summary[name] = {
        "ms_per_step": {arm: a["ms_per_step"] for arm, a in r["arms"].items()},
        "speedup_vs_seed": {arm: a["speedup_vs_seed"] for arm, a in r["arms"].items()},
        "distill_vs_scratch": r["distill_vs_scratch"],
        "targets": r["targets"],
        "gpu": r.get("gpu"),
    }
    ms = " / ".join(f"{r['arms'][a]['ms_per_step']:.2f}" for a in ("teacher", "scratch", "distilled"))
    t = r["targets"]
    lines.append(
        f"  {name}: teacher / scratch / distill {ms} ms/step (seed 95 / 64 / 74); "
        f"speedup >= 10x {'met' if t['speedup_met'] else 'NOT met'}; distill / scratch "
        f"{r['distill_vs_scratch']:.3f} {'met' if t['distill_vs_scratch_met'] else 'NOT met'} (<= 1.15)"
    )
for name, p in phases.items():
    if p["exit_status"] != 0:
        timed_out = " (timeout)" if p["exit_status"] in (124, 137) else ""
        lines.append(f"  phase {name} FAILED: exit status {p['exit_status']}{timed_out} after {p['seconds']} s; see {out / p['log']}")
(out / "gpu-check.json").write_text(json.dumps(summary, indent=2) + "\n")
print("\n".join(lines))
EOF

for rc in "${CODES[@]}"; do
    if [[ $rc -ne 0 ]]; then
        exit 1
    fi
done

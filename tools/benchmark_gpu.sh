#!/usr/bin/env bash
# The GPU benchmark behind the README's GPU table: propagation (fp32, bf16, fp16, compiled),
# the semi-online tracker and training steps, each suite in its own process with a time
# limit, so that one failure or hang does not lose the others.
#
#   bash tools/benchmark_gpu.sh OUT_DIR [key=value ...]
#
# Extra options go to every tools/benchmark.py call and win over the ones below
# (e.g. presets=[small] frames=20). DEVICE=cpu runs the same steps on the CPU (a dry run of
# this script: add quick=true presets=[tiny] train_presets=[tiny]). LIMIT is the seconds
# each step may take (default 300). Writes OUT_DIR/{gpu.txt, <step>.json, benchmark.log}.
set -uo pipefail

out=${1:?usage: bash tools/benchmark_gpu.sh OUT_DIR [key=value ...]}
shift
device=${DEVICE:-cuda}
limit=${LIMIT:-300}
python=${PYTHON:-python3}
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)

if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv \
        | tee "$out/gpu.txt"
fi
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
    | tee -a "$out/gpu.txt"

failed=0
step() {
    local name=$1
    shift
    echo "== $name: $*" | tee -a "$out/benchmark.log"
    timeout "$limit" "$python" "$here/benchmark.py" device="$device" "$@" out="$out/$name.json" \
        2>&1 | tee -a "$out/benchmark.log"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        echo "== $name failed (exit $rc)" | tee -a "$out/benchmark.log"
        failed=1
    fi
}

# Eager variants first (the main numbers), then the rest; compiled variants last, as their
# compilation takes the longest.
step propagation suite=[propagation] presets=[published] amp=bf16 compile=false \
    frames=60 warmup=5 "$@"
step training suite=[training] train_presets=[small,published] train_steps=5 "$@"
step tracker suite=[tracker] presets=[published] amp=bf16 compile=false \
    tracker_frames=30 tracker_detections=video "$@"
step propagation_fp16 suite=[propagation] presets=[published] amp=fp16 compile=false \
    frames=60 warmup=5 "$@"
step propagation_compiled suite=[propagation] presets=[published] amp=bf16 compile=true \
    frames=40 warmup=6 "$@"
exit $failed

#!/usr/bin/env bash
# Throughput of mnist-cnn on your GPU next to flex on your CPU, as rows for BENCHMARKS.md.
#
#   benches/gpu.sh            # wgpu (Vulkan, Metal or DirectX 12)
#   benches/gpu.sh cuda       # CUDA (needs the NVIDIA driver and the CUDA toolkit's NVRTC)
#   benches/gpu.sh wgpu,cuda  # both
#
# Builds with the given cargo features, runs `mnist-cnn bench` on flex and each GPU backend
# (larger batches too, where GPUs shine), writes the JSON to target/bench/ and prints the
# table rows with a line describing the machine. Please paste both into an issue or PR.
set -euo pipefail
cd "$(dirname "$0")/.."

features="${1:-wgpu}"
cargo build --release --features "$features"
mkdir -p target/bench
out="target/bench/gpu-$(date -u +%Y%m%dT%H%M%SZ).json"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

target/release/mnist-cnn bench --backends "flex,$features" \
  --batch-sizes 128,512,2048 --eval-batch-sizes 500,2000 --train-images 20480 \
  --output "$out" --markdown

gpu=""
if command -v nvidia-smi >/dev/null 2>&1; then
  gpu="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)"
fi
cpu="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | xargs || uname -m)"
echo
echo "measured $(date -u +%Y-%m-%d), mnist-cnn $(git rev-parse --short HEAD 2>/dev/null || echo '?')," \
  "burn 0.22.1, $(uname -s) $(uname -r), CPU: $cpu${gpu:+, GPU: $gpu}; JSON: $out"

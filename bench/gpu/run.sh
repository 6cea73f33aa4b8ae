#!/usr/bin/env bash
# The Frugal GPU bundle's one script. Runs on a Linux x86-64 machine with no .NET and no network:
# unpacks the bundled .NET runtime and the published test/bench/CLI builds, then writes one Markdown report with
# the machine, the CUDA driver's answer, the kernels compiled by NVRTC, every test's outcome (CPU and CUDA), the
# CPU SGEMM and the GPU benchmarks beside PyTorch's (torch/peers.py, when `python3 -c "import torch"` works).
# Usage: run.sh [OUT_DIR]   (default: $OUT, else ./out); the report is OUT_DIR/report.md.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-${OUT:-$here/out}}
mkdir -p "$out"
report="$out/report.md"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xJf "$here/runtime.tar.xz" -C "$work" && tar -xJf "$here/app.tar.xz" -C "$work" || { echo "run.sh: cannot unpack the bundle" >&2; exit 2; }
export DOTNET_ROOT="$work" DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1
export FRUGAL_CACHE="${FRUGAL_CACHE:-$work/kernel-cache}"
dn="$work/dotnet"
# Frugal looks for NVRTC and cuBLAS under $CUDA_PATH/lib64, /usr/local/cuda/lib64 and the loader path; where the
# toolkit lives elsewhere, take its folder from nvcc.
if [ -z "${CUDA_PATH:-}" ] && [ ! -d /usr/local/cuda/lib64 ] && command -v nvcc >/dev/null 2>&1; then
  export CUDA_PATH="$(dirname "$(dirname "$(command -v nvcc)")")"
fi

begin() { printf '\n## %s\n\n```\n' "$1" >> "$report"; echo "== $1" >&2; }
end() { printf '```\n' >> "$report"; }

{
  echo "# Frugal GPU bundle report"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- host: $(uname -srm)"
  echo "- cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "- gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
  else
    echo "- gpu: nvidia-smi not found"
  fi
  echo "- nvcc: $(nvcc --version 2>/dev/null | tail -1 || echo 'not found'); CUDA_PATH: ${CUDA_PATH:-unset}"
  echo "- bundle: $(cat "$here/VERSION" 2>/dev/null || echo unknown)"
} > "$report"

begin "frugal devices"
"$dn" "$work/app/cli/Frugal.Cli.dll" devices >> "$report" 2>&1
end

begin "frugal kernels: every embedded kernel through NVRTC for cuda:0's architecture"
timeout 180 "$dn" "$work/app/cli/Frugal.Cli.dll" kernels >> "$report" 2>&1
end

begin "tests: every test, on every available device"
# Time limits keep a hung kernel from spending the device's whole loan; exit 124 in the report means one hit.
timeout 360 "$dn" exec "$work/app/tests/Frugal.Tests.dll" --no-ansi --progress off --show-test-results all >> "$report" 2>&1
tests_rc=$?
end

begin "frugal train on the GPU: MLP and CNN, one epoch of the embedded slice"
for model in mlp cnn; do
  timeout 120 "$dn" "$work/app/cli/Frugal.Cli.dll" train --model "$model" --device cuda --data embedded --epochs 1 >> "$report" 2>&1 \
    || echo "train $model exit $?" >> "$report"
done
end

begin "frugal profile on the GPU: memory per format of the MLP (allocator and driver counts)"
timeout 120 "$dn" "$work/app/cli/Frugal.Cli.dll" profile --model mlp --device cuda --data embedded --steps 3 --out "$out/profile" >> "$report" 2>&1 \
  || echo "profile exit $?" >> "$report"
[ -f "$out/profile/profile.json" ] && grep -E '"(format|driverUsedBytes|reservedBytes|peakTotal)"' "$out/profile/profile.json" >> "$report"
end

begin "frugal train --model gpt on cuda:0 (4 layers, width 256, the embedded README corpus)"
timeout 240 "$dn" "$work/app/cli/Frugal.Cli.dll" train --model gpt --device cuda --steps 100 --eval-every 50 >> "$report" 2>&1 \
  || echo "gpt exit $?" >> "$report"
end

begin "bench sgemm (CPU)"
timeout 120 "$dn" "$work/app/bench/Frugal.Bench.dll" sgemm 1024 2048 >> "$report" 2>&1
end

peer="$work/peer.json"
if python3 -c "import torch" >/dev/null 2>&1 && [ -f "$here/torch/peers.py" ]; then
  begin "peer: PyTorch (torch/peers.py)"
  timeout 180 python3 "$here/torch/peers.py" "$peer" >> "$report" 2>&1
  end
else
  printf '\n## peer\n\nPyTorch is not importable here: no torch column.\n' >> "$report"
fi

begin "bench gpu: GEMM, memory-bound ops and training steps on cuda:0 beside PyTorch"
timeout 240 "$dn" "$work/app/bench/Frugal.Bench.dll" gpu --peer "$peer" >> "$report" 2>&1 || echo "bench gpu exit $?" >> "$report"
end

printf '\n## result\n\ntests exit code: %s\n' "$tests_rc" >> "$report"
echo "report: $report" >&2
exit "$tests_rc"

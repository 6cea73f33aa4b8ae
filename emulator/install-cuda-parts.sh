#!/usr/bin/env bash
# What CI needs from Debian bookworm for CUDA without a GPU, installed idempotently (run as root; seconds when done):
#  - the non-free apt component (Debian's CUDA 11.8 packages live there), as a deb822 source with the same URI and
#    keyring as the main one in /etc/apt/sources.list.d/debian.sources;
#  - libnvrtc11.2 + libnvrtc-builtins11.8 (the real NVRTC 11.8, soname libnvrtc.so.11.2: `frugal kernels`),
#    dataset-fashion-mnist and fortunes (test data);
#  - the CUDA headers (nvidia-cuda-dev's /usr/include, for building emulator/) and ptxas + cuobjdump
#    (nvidia-cuda-toolkit, for reading the CUBINs' resource usage), extracted from the downloaded .debs into
#    $FRUGAL_CUDA_PARTS (default /opt/frugal/cuda-11.8) without installing those packages: nvidia-cuda-dev is 2.8 GB
#    installed and they depend on the NVIDIA driver.
set -euo pipefail

prefix="${FRUGAL_CUDA_PARTS:-/opt/frugal/cuda-11.8}"
packages=(libnvrtc11.2 libnvrtc-builtins11.8 dataset-fashion-mnist fortunes)
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" -ne 0 ]; then
  echo "install-cuda-parts.sh: run as root (apt-get install)" >&2
  exit 1
fi

# 1. The non-free component, unless some source already has it ("non-free" alone, not "non-free-firmware").
updated=0
if ! grep -Eqs '^[^#]*(Components:|deb ).*[[:space:]]non-free([[:space:]]|$)' /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; then
  main=/etc/apt/sources.list.d/debian.sources
  uri=$(awk '/^URIs:/ { print $2; exit }' "$main" 2>/dev/null || true)
  keyring=$(awk '/^Signed-By:/ { print $2; exit }' "$main" 2>/dev/null || true)
  cat > /etc/apt/sources.list.d/nonfree.sources <<EOF
Types: deb
URIs: ${uri:-http://deb.debian.org/debian}
Suites: bookworm
Components: non-free
Signed-By: ${keyring:-/usr/share/keyrings/debian-archive-keyring.gpg}
EOF
  echo "install-cuda-parts.sh: added /etc/apt/sources.list.d/nonfree.sources"
  apt-get update -qq
  updated=1
fi

update_once() {
  if [ "$updated" -eq 0 ]; then
    apt-get update -qq
    updated=1
  fi
}

# 2. The packages that are not installed yet.
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  update_once
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# 3. Headers and tools out of the .debs, each only when its files are not there yet.
need_headers=0; need_tools=0
[ -f "$prefix/usr/include/cuda.h" ] || need_headers=1
[ -x "$prefix/usr/bin/ptxas" ] && [ -x "$prefix/usr/bin/cuobjdump" ] || need_tools=1
if [ "$need_headers" -eq 1 ] || [ "$need_tools" -eq 1 ]; then
  update_once
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  chmod 755 "$work"
  # apt-get download runs as _apt where that user can write the folder (else it warns and downloads as root).
  if getent passwd _apt >/dev/null; then chown _apt "$work"; fi
  mkdir -p "$prefix"
  if [ "$need_headers" -eq 1 ]; then
    (cd "$work" && apt-get download -qq nvidia-cuda-dev)
    dpkg-deb --fsys-tarfile "$work"/nvidia-cuda-dev_*.deb | tar -x -C "$prefix" --wildcards './usr/include/*'
    rm -f "$work"/nvidia-cuda-dev_*.deb
  fi
  if [ "$need_tools" -eq 1 ]; then
    (cd "$work" && apt-get download -qq nvidia-cuda-toolkit)
    dpkg-deb --fsys-tarfile "$work"/nvidia-cuda-toolkit_*.deb | tar -x -C "$prefix" ./usr/bin/ptxas ./usr/bin/cuobjdump
    rm -f "$work"/nvidia-cuda-toolkit_*.deb
  fi
fi

for f in usr/include/cuda.h usr/include/nvrtc.h usr/bin/ptxas usr/bin/cuobjdump; do
  if [ ! -e "$prefix/$f" ]; then
    echo "install-cuda-parts.sh: $prefix/$f is missing after extraction" >&2
    exit 1
  fi
done
echo "install-cuda-parts.sh: NVRTC $(dpkg-query -W -f='${Version}' libnvrtc11.2), headers and ptxas/cuobjdump in $prefix"

#!/usr/bin/env bash
# One command for a fresh GPU machine: installs the Debian dependencies (where
# apt-get and a network exist), fetches the pinned CUTLASS (v4.7.0) unless one
# is already found, builds FACT, and runs `fact optimize` on a bundled example.
#   scripts/setup.sh [EXAMPLE.py]     (default: examples/l1_square_4096.py)
set -euo pipefail
cd "$(dirname "$0")/.."
example=${1:-examples/l1_square_4096.py}

debian_packages=(cmake ninja-build g++ nlohmann-json3-dev libcli11-dev libfmt-dev libsqlite3-dev libxxhash-dev libgtest-dev)
if command -v apt-get >/dev/null 2>&1 && [ ! -d third_party/deps ]; then
  missing=()
  for p in "${debian_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
fi

# CUTLASS resolution order (DESIGN.md): $CUTLASS_DIR, third_party/cutlass,
# ~/.cache/fact/cutlass-v4.7.0, else a shallow clone of the tag.
cutlass_tag=v4.7.0
cache_cutlass="$HOME/.cache/fact/cutlass-$cutlass_tag"
if [ -z "${CUTLASS_DIR:-}" ] && [ ! -d third_party/cutlass/include ] && [ ! -d "$cache_cutlass/include" ]; then
  echo "setup: fetching CUTLASS $cutlass_tag into $cache_cutlass"
  mkdir -p "$(dirname "$cache_cutlass")"
  git clone -q --depth 1 --branch "$cutlass_tag" https://github.com/NVIDIA/cutlass.git "$cache_cutlass.clone"
  git -C "$cache_cutlass.clone" rev-parse HEAD >"$cache_cutlass.clone/.fact-cutlass-commit"
  mv "$cache_cutlass.clone" "$cache_cutlass"
fi

cmake --preset release >/dev/null
cmake --build --preset release -j"$(nproc)"
build/release/fact doctor || true
build/release/fact optimize "$example"

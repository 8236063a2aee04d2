#!/usr/bin/env bash
# Prepares .fact/carry/ (git-ignored) for a run on a GPU machine that has no
# network, no apt and no sqlite3.h: the CUTLASS headers and the Debian
# dependency headers as tarballs, a `fact` binary built here, and optionally a
# kernel cache precompiled here for the given examples (so the GPU machine's
# time goes to verifying and timing, not to nvcc).
#
#   scripts/prepare_device_carry.sh [--precompile EXAMPLE.py ...] [--tolerances "1e-4 1e-2"]
#
# Then, with the device tool: carry [".fact/carry"] and run
#   mkdir -p third_party build/release && tar -C third_party -xzf .fact/carry/cutlass.tgz &&
#   tar -C third_party -xzf .fact/carry/deps.tgz && cp .fact/carry/fact build/release/fact &&
#   SKIP_BUILD=1 SEED_KERNELS=$PWD/.fact/carry/kcache.tgz OUT=$OUT bash scripts/gpu_run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
carry=.fact/carry
mkdir -p "$carry" third_party

examples=()
tolerances="1e-4 1e-2"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --precompile) shift; while [[ $# -gt 0 && $1 != --* ]]; do examples+=("$1"); shift; done ;;
    --tolerances) tolerances=$2; shift 2 ;;
    *) echo "prepare_device_carry.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

# Headers of the Debian packages DESIGN.md names, unpacked without installing.
if [[ ! -d third_party/deps/usr/include ]]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq libsqlite3-dev libxxhash-dev nlohmann-json3-dev libcli11-dev libfmt-dev)
  for deb in "$tmp"/*.deb; do dpkg -x "$deb" third_party/deps; done
  rm -rf "$tmp"
fi
tar -C third_party -czf "$carry/deps.tgz" deps

cutlass=${CUTLASS_DIR:-$HOME/.cache/fact/cutlass-v4.7.0}
[[ -d third_party/cutlass/include ]] || cp -r "$cutlass" third_party/cutlass
tar -C third_party -czf "$carry/cutlass.tgz" cutlass

cmake --preset release >/dev/null
cmake --build --preset release -j"$(nproc)" --target fact
cp build/release/fact "$carry/fact"

if [[ ${#examples[@]} -gt 0 ]]; then
  cache=$(mktemp -d)
  for example in "${examples[@]}"; do
    for tol in $tolerances; do
      FACT_CACHE_DIR=$cache FACT_REGISTRY=$cache/registry.sqlite \
        build/release/fact optimize "$example" --tolerance "$tol" --compile-only --arch sm90a -o "$cache/out"
    done
  done
  tar -C "$cache" -czf "$carry/kcache.tgz" kernels
  rm -rf "$cache"
fi
ls -la "$carry"

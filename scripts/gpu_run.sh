#!/usr/bin/env bash
# One command on the GPU machine: build FACT, optimize every workload of a suite at each
# tolerance (cold = empty cache and registry, then warm = the same command
# again), benchmark all systems in one run (bench/run.py), and put results,
# logs and reports into $OUT (at most 8 files; see bench/README.md).
#
#   scripts/gpu_run.sh                  build + optimize + bench
#   scripts/gpu_run.sh --bench-only     bench only: uses out/<example>_<tol>/ and
#                                       out/optimize_times.json from an earlier run
#   scripts/gpu_run.sh --optimize-only  build + optimize; composed modules come
#                                       back as $OUT/composed.tar.gz
#
# Environment:
#   WORKLOADS      space/comma-separated subset of the suite (default: all of SUITE);
#                  a subset merges into the existing results file (MERGE=1)
#   SUITE          bench suite (default l1-gemm; l3-minigpt for the transformer workloads)
#   TOLERANCES     default "1e-4 1e-2"
#   SKIP_INDUCTOR  1 leaves out the torch.compile peers
#   SYSTEMS        comma-separated systems for bench/run.py --systems (default: the
#                  suite's peers + fact; name `fact` to keep the composed modules)
#   ABLATIONS      0 times each composed module once (all patterns bound) even where
#                  the workload declares FACT_ABLATIONS (default 1: once per setting)
#   REPS           timed runs per system (default 100), TRIALS (default 5)
#   MERGE          1/0: keep the other workloads of an existing results file
#   LIMIT_S        wall-clock budget of the whole script (default 590: the device
#                  tool stops a command at 600 s); long steps run under `timeout`
#                  so that results and logs are always packed into $OUT
#   JOBS           build jobs (default: nproc)
#   SKIP_BUILD     1 uses an existing build/release/fact (e.g. one built and carried from elsewhere)
#   SEED_KERNELS   a .tgz of a kernel cache (FACT_CACHE_DIR/kernels) compiled elsewhere:
#                  each "cold" optimize then starts from an empty registry but with
#                  these kernels precompiled (the JSON's "cache" field says so)
#   RESULTS_DIR    where bench/run.py writes <card>/<suite>.json (default bench/results;
#                  e.g. bench/results/partial for a run that covers only some peers or
#                  tolerances and must not replace the full records of a workload)
#   OUT            where the files to bring back go (default out/gpu_run)
# Needs: python3 with torch, nvcc, cmake, ninja; third_party/deps (sqlite3 etc.
# headers) and third_party/cutlass (or $CUTLASS_DIR) carried to the machine.
# Hazard: send this script's output to a file (it also keeps $OUT/gpu_run.log), never
# through `| head`: when head exits, the next write ends this script and the bench with
# SIGPIPE, silently, mid-run (Inductor max-autotune prints a line per autotune choice).
set -u -o pipefail
export PYTHONUNBUFFERED=1

MODE=all
for arg in "$@"; do
  case "$arg" in
    --bench-only) MODE=bench ;;
    --optimize-only) MODE=optimize ;;
    -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
    *) echo "gpu_run.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

# The reproducing command for the results file: the arguments and the knobs
# the caller set (before defaults are filled in below).
RECORDED="scripts/gpu_run.sh${*:+ $*}"
for v in TRIALS REPS SKIP_INDUCTOR SYSTEMS ABLATIONS TOLERANCES SUITE WORKLOADS MERGE RESULTS_DIR; do
  [[ -n "${!v+x}" ]] && RECORDED="$v='${!v}' $RECORDED"
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
START=$(date +%s)
LIMIT_S=${LIMIT_S:-590}
SUITE=${SUITE:-l1-gemm}
RESULTS_DIR=${RESULTS_DIR:-bench/results}
TOLERANCES=${TOLERANCES:-"1e-4 1e-2"}
REPS=${REPS:-100}
TRIALS=${TRIALS:-5}
JOBS=${JOBS:-$(nproc)}
OUT=${OUT:-$ROOT/out/gpu_run}
WORK=$ROOT/out
LOGS=$WORK/logs
TIMES=$WORK/optimize_times.json
mkdir -p "$OUT" "$LOGS"
MAIN_LOG=$OUT/gpu_run.log
exec > >(tee -a "$MAIN_LOG") 2>&1

export PYTHONPATH=$ROOT/python${PYTHONPATH:+:$PYTHONPATH}
export FACT_PYTHON=${FACT_PYTHON:-python3}
if [[ -z "${CUTLASS_DIR:-}" && -d "$ROOT/third_party/cutlass/include" ]]; then
  export CUTLASS_DIR=$ROOT/third_party/cutlass
fi

STATUS=0  # 1 once any step failed; the script's exit status
elapsed() { echo $(( $(date +%s) - START )); }
remaining() { echo $(( LIMIT_S - $(elapsed) )); }
say() { echo "[gpu_run +$(elapsed)s] $*"; }

# Run a step under `timeout` so that at least RESERVE seconds stay for packing;
# its output goes to LOGFILE, and also to the screen (the main log) with --tee.
RESERVE=25
bounded() {  # bounded [--tee] LOGFILE CMD...
  local show=0
  if [[ $1 == --tee ]]; then show=1; shift; fi
  local log=$1; shift
  local left=$(( $(remaining) - RESERVE ))
  if (( left < 10 )); then
    echo "skipped: time budget (LIMIT_S=$LIMIT_S) spent" | tee "$log"
    return 124
  fi
  if (( show )); then
    timeout --kill-after=5 "$left" "$@" 2>&1 | tee "$log"
  else
    timeout --kill-after=5 "$left" "$@" >"$log" 2>&1
  fi
}

# Workload table of the suite: lines "workload example_path".
mapfile -t TABLE < <(python3 - "$SUITE" <<'EOF'
import sys
sys.path.insert(0, ".")
from bench import suites
for w, p in suites.SUITES[sys.argv[1]].items():
    print(w, p)
EOF
)
(( ${#TABLE[@]} )) || { say "unknown or empty suite '$SUITE' (bench/suites.py)"; exit 2; }
SELECTED=()
if [[ -n "${WORKLOADS:-}" ]]; then
  for w in ${WORKLOADS//,/ }; do
    found=0
    for row in "${TABLE[@]}"; do [[ ${row%% *} == "$w" ]] && { SELECTED+=("$row"); found=1; }; done
    (( found )) || { say "workload '$w' is not in suite $SUITE"; exit 2; }
  done
  MERGE=${MERGE:-1}
else
  SELECTED=("${TABLE[@]}")
  MERGE=${MERGE:-0}
fi

say "mode=$MODE suite=$SUITE workloads=$(for r in "${SELECTED[@]}"; do printf '%s ' "${r%% *}"; done)tolerances='$TOLERANCES' reps=$REPS"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || say "nvidia-smi failed"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available() and torch.cuda.get_device_name(0))'
command -v nvcc >/dev/null && nvcc --version | tail -n 2
say "CUTLASS_DIR=${CUTLASS_DIR:-<unset>}"

pack() {
  # Everything that comes back: main log, results, optimize times, reports,
  # logs tarball, composed modules, summary (7 files, each < 16 MiB).
  [[ -f "$TIMES" ]] && cp "$TIMES" "$OUT/optimize_times.json"
  local results
  results=$(ls -t "$RESULTS_DIR"/*/"$SUITE".json 2>/dev/null | head -n 1)
  [[ -n "$results" ]] && cp "$results" "$OUT/$SUITE.json"
  : >"$OUT/reports.md"
  for d in "$WORK"/*/; do
    if [[ -f "$d/report.md" ]]; then
      { echo "# $(basename "$d")"; cat "$d/report.md"; echo; } >>"$OUT/reports.md"
    fi
  done
  if [[ -f "$OUT/$SUITE.json" ]] && grep -q '"ablation"' "$OUT/$SUITE.json"; then
    { echo "# Per-pattern ablation (bench/run.py, $SUITE.json)"; echo
      python3 bench/run.py --show-ablations "$OUT/$SUITE.json"; echo; } >>"$OUT/reports.md"
  fi
  [[ -s "$OUT/reports.md" ]] || rm -f "$OUT/reports.md"
  tar -C "$WORK" -czf "$OUT/logs.tar.gz" logs 2>/dev/null
  local dirs=()
  for d in "$WORK"/*/; do [[ -f "$d/ModelNew.py" ]] && dirs+=("$(basename "$d")"); done
  if (( ${#dirs[@]} )); then
    tar -C "$WORK" -czf "$OUT/composed.tar.gz" "${dirs[@]}" optimize_times.json 2>/dev/null ||
      tar -C "$WORK" -czf "$OUT/composed.tar.gz" "${dirs[@]}"
    if (( $(stat -c %s "$OUT/composed.tar.gz") > 15 * 1024 * 1024 )); then
      say "composed.tar.gz is over 15 MiB: not brought back"
      rm -f "$OUT/composed.tar.gz"
    fi
  fi
  {
    echo "gpu_run.sh mode=$MODE suite=$SUITE finished after $(elapsed)s"
    if [[ -f "$TIMES" ]]; then
      python3 - "$TIMES" <<'EOF'
import json, sys
entries = json.load(open(sys.argv[1]))
print(f"{'workload':<28} {'tol':<7} {'cold s':>8} {'warm s':>8}  rc(cold,warm)")
for e in entries:
    print(f"{e['workload']:<28} {e.get('tolerance', 0):<7g} {e['cold_s']:>8.1f} {e['warm_s']:>8.1f}  "
          f"{e.get('cold_rc')},{e.get('warm_rc')}")
EOF
    fi
    [[ -f "$OUT/$SUITE.json" ]] && python3 bench/run.py --show "$OUT/$SUITE.json"
  } >"$OUT/summary.txt" 2>&1
}
trap pack EXIT
trap 'say "stopped by a signal"; exit 143' TERM INT
# Exit status: 0 when every step succeeded, 1 when a build, optimize or bench
# step failed (the other steps still ran and their files are in $OUT).

# ----------------------------------------------------------------- build
FACT_BIN=$ROOT/build/release/fact
if [[ ${SKIP_BUILD:-0} == 1 ]]; then
  say "SKIP_BUILD=1: using the existing $FACT_BIN"
elif [[ $MODE != bench ]]; then
  say "building FACT (cmake --preset release, -j$JOBS)"
  if bounded "$LOGS/build.log" bash -c "cmake --preset release && cmake --build --preset release -j$JOBS"; then
    say "build ok"
  else
    say "BUILD FAILED (rc $?); last lines of out/logs/build.log:"
    STATUS=1
    tail -n 30 "$LOGS/build.log"
  fi
fi

# ----------------------------------------------------------------- optimize
fact_args=()
# optimize_times.json accumulates over calls (WORKLOADS subsets): an entry is
# replaced only when its (workload, tolerance) is optimized again.
[[ -f "$TIMES" ]] || echo "[]" >"$TIMES"
for row in "${SELECTED[@]}"; do
  workload=${row%% *}
  example=${row#* }
  stem=$(basename "$example" .py)
  for tol in $TOLERANCES; do
    dir=$WORK/${stem}_${tol}
    fact_args+=(--fact "$workload:$tol=$dir")
    [[ $MODE == bench ]] && continue
    if [[ ! -x "$FACT_BIN" ]]; then
      say "no $FACT_BIN: skipping optimize of $workload @ $tol"
      continue
    fi
    rm -rf "$dir"
    cache=$(mktemp -d /tmp/fact-cold.XXXXXX)
    cache_note="empty cache and registry per (workload, tolerance)"
    if [[ -n "${SEED_KERNELS:-}" && -f "$SEED_KERNELS" ]]; then
      tar -C "$cache" -xzf "$SEED_KERNELS"
      cache_note="empty registry; kernel cache seeded with kernels compiled on the 2-core dev machine ($(basename "$SEED_KERNELS"))"
    fi
    runs=()
    for phase in cold warm; do
      say "fact optimize $example --tolerance $tol ($phase; FACT_CACHE_DIR=$cache)"
      t0=$(date +%s.%N)
      # Live progress goes to the step log; its tail is shown below.
      FACT_CACHE_DIR=$cache FACT_REGISTRY=$cache/registry.sqlite \
        bounded --tee "$LOGS/optimize_${stem}_${tol}_${phase}.log" \
        "$FACT_BIN" optimize "$example" --tolerance "$tol" -o "$dir"
      rc=$?
      t1=$(date +%s.%N)
      secs=$(python3 -c "print(round($t1 - $t0, 2))")
      runs+=("$secs" "$rc")
      say "  $phase: ${secs}s rc=$rc"
      (( rc == 0 )) || STATUS=1
    done
    python3 - "$TIMES" "$workload" "$tol" "${runs[@]}" "$(nproc)" "$cache_note" <<'EOF'
import json, sys
path, workload, tol, cold_s, cold_rc, warm_s, warm_rc, cores, cache_note = sys.argv[1:]
entries = [e for e in json.load(open(path))
           if (e.get("workload"), e.get("tolerance")) != (workload, float(tol))]
entries.append({"workload": workload, "tolerance": float(tol), "cold_s": float(cold_s), "warm_s": float(warm_s),
                "host_cores": int(cores), "cold_rc": int(cold_rc), "warm_rc": int(warm_rc),
                "cache": cache_note})
json.dump(entries, open(path, "w"), indent=2)
EOF
    rm -rf "$cache"
  done
done

# ----------------------------------------------------------------- bench
if [[ $MODE != optimize ]]; then
  names=$(for r in "${SELECTED[@]}"; do printf '%s,' "${r%% *}"; done)
  bench_args=(--suite "$SUITE" --out "$RESULTS_DIR" --workloads "${names%,}" --reps "$REPS" --trials "$TRIALS")
  [[ ${SKIP_INDUCTOR:-0} == 1 ]] && bench_args+=(--skip-inductor)
  [[ -n "${SYSTEMS:-}" ]] && bench_args+=(--systems "$SYSTEMS")
  [[ ${ABLATIONS:-1} == 0 ]] && bench_args+=(--no-ablations)
  [[ $MERGE == 1 ]] && bench_args+=(--merge)
  [[ -f "$TIMES" ]] && bench_args+=(--optimize-times "$TIMES")
  say "bench: python3 bench/run.py ${bench_args[*]} ${fact_args[*]}"
  if bounded --tee "$LOGS/bench.log" python3 bench/run.py "${bench_args[@]}" "${fact_args[@]}" --command "$RECORDED"; then
    say "bench ok"
  else
    say "BENCH FAILED or stopped (rc $?)"
    STATUS=1
  fi
fi

pack
trap - EXIT
say "done; files in $OUT:"
ls -la "$OUT"
echo
cat "$OUT/summary.txt"
exit $STATUS

#!/usr/bin/env bash
# Build, check and time templates/split_gemm_sm90.cuh and the warp-specialized
# templates/split_gemm_ws_sm90.cuh, split_gemm_pre_sm90.cuh and split_gemm_hybrid_sm90.cuh
# (docs/notes/split_gemm.md).
#
#   scripts/split_gemm_dev.sh build    # here (no GPU needed): thin variant TUs -> .so,
#                                      # tests/gpu/split_gemm_check.cu -> binary, into .fact/dev
#   scripts/split_gemm_dev.sh device   # on the GPU machine (device tool, carry .fact/dev):
#                                      # premise experiment, checks, timings; logs to $OUT
# Environment: DEV (default .fact/dev: builds and check binaries), CUTLASS_DIR (default ~/.cache/fact/cutlass-v4.7.0), NVCC, JOBS (parallel nvcc),
# SPLIT_GEMM_PREMISE=0 skips the PyTorch premise experiment, VARIANTS limits the variants run,
# HANDOFF_TIME=1 times the operand hand-off (pre variants with bias, or t6 without) on the MLP shape,
# SPLIT_GEMM_NCU=<variant> adds one Nsight Compute profile of that variant on 4096^3 (two
# launches of the kernels matching SPLIT_GEMM_NCU_KERNEL, an ncu -k regex, default
# split_gemm_kernel; when SPLIT_GEMM_NCU_KERNEL is set, also on the bmm shape: ncu_bmm.txt).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEV="${DEV:-$ROOT/.fact/dev}"
CUTLASS_DIR="${CUTLASS_DIR:-$HOME/.cache/fact/cutlass-v4.7.0}"
NVCC="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
JOBS="${JOBS:-1}"

# name | TileM TileN TileK Terms ARowMajor BRowMajor Epilogue Stages [PartFormat] | check flags
# f16_ variants use the scaled-fp16 part format. The base template is the v2 pipeline
# (docs/notes/split_gemm_v2.patch is already applied there). Names starting with ws_ build
# templates/split_gemm_ws_sm90.cuh (v3, warp-specialized, two producer warpgroups; Stages =
# part ring depth). Names starting with pre_ build templates/split_gemm_pre_sm90.cuh (operands
# split by a pre-pass; Stages = part ring depth). Names starting with hyb_ build
# templates/split_gemm_hybrid_sm90.cuh (A split by a pre-pass, B by two producer warpgroups;
# Stages = part ring depth, B's fp32 ring takes what shared memory is left, up to 4; hybp_:
# the same launched persistent).
VARIANT_TABLE="
t3_rr_none|128,128,32,3,true,true,FACT_EPILOGUE_NONE,4|--a row --b row --ep none --terms 3
t6_rr_none|128,128,32,6,true,true,FACT_EPILOGUE_NONE,3|--a row --b row --ep none --terms 6
t1_rr_none|128,128,32,1,true,true,FACT_EPILOGUE_NONE,4|--a row --b row --ep none --terms 1
t3_rc_bias|128,128,32,3,true,false,FACT_EPILOGUE_BIAS,4|--a row --b col --ep bias --terms 3
t3_cc_c|128,128,32,3,false,false,FACT_EPILOGUE_C,4|--a col --b col --ep c --terms 3
t6_cr_none|128,128,32,6,false,true,FACT_EPILOGUE_NONE,3|--a col --b row --ep none --terms 6
t6_m64n64_rc_bias|64,64,32,6,true,false,FACT_EPILOGUE_BIAS,4|--a row --b col --ep bias --terms 6
f16_t3_rr_none|128,128,32,3,true,true,FACT_EPILOGUE_NONE,4,fact::split_gemm::PartsFp16Scaled|--a row --b row --ep none --terms 3
f16_t3_cc_c|128,128,32,3,false,false,FACT_EPILOGUE_C,4,fact::split_gemm::PartsFp16Scaled|--a col --b col --ep c --terms 3
f16_t1_rr_none|128,128,32,1,true,true,FACT_EPILOGUE_NONE,4,fact::split_gemm::PartsFp16Scaled|--a row --b row --ep none --terms 1
ws_f16_t3_rr_none|128,128,32,3,true,true,FACT_EPILOGUE_NONE,4,fact::split_gemm::PartsFp16Scaled|--a row --b row --ep none --terms 3
ws_f16_t3_cc_c|128,128,32,3,false,false,FACT_EPILOGUE_C,4,fact::split_gemm::PartsFp16Scaled|--a col --b col --ep c --terms 3
ws_f16_t3_rc_bias|128,128,32,3,true,false,FACT_EPILOGUE_BIAS,4,fact::split_gemm::PartsFp16Scaled|--a row --b col --ep bias --terms 3
ws_f16_t3_cr_none|128,128,32,3,false,true,FACT_EPILOGUE_NONE,4,fact::split_gemm::PartsFp16Scaled|--a col --b row --ep none --terms 3
ws_s3_f16_t3_rr_none|128,128,32,3,true,true,FACT_EPILOGUE_NONE,3,fact::split_gemm::PartsFp16Scaled|--a row --b row --ep none --terms 3
ws_t6_rr_none|128,128,32,6,true,true,FACT_EPILOGUE_NONE,3|--a row --b row --ep none --terms 6
ws_t3_rr_none|128,128,32,3,true,true,FACT_EPILOGUE_NONE,4|--a row --b row --ep none --terms 3
ws_t1_rc_bias|128,128,32,1,true,false,FACT_EPILOGUE_BIAS,4|--a row --b col --ep bias --terms 1
pre_f16_t3_rr_none|128,128,32,3,true,true,FACT_EPILOGUE_NONE,6,fact::split_gemm::PartsFp16Scaled|--a row --b row --ep none --terms 3
pre_f16_t3_cc_c|128,128,32,3,false,false,FACT_EPILOGUE_C,6,fact::split_gemm::PartsFp16Scaled|--a col --b col --ep c --terms 3
pre_f16_t3_rc_bias|128,128,32,3,true,false,FACT_EPILOGUE_BIAS,6,fact::split_gemm::PartsFp16Scaled|--a row --b col --ep bias --terms 3
pre_f16_t3_rc_c|128,128,32,3,true,false,FACT_EPILOGUE_C,6,fact::split_gemm::PartsFp16Scaled|--a row --b col --ep c --terms 3
pre_f16_t3_cr_none|128,128,32,3,false,true,FACT_EPILOGUE_NONE,6,fact::split_gemm::PartsFp16Scaled|--a col --b row --ep none --terms 3
pre_t6_rr_none|128,128,32,6,true,true,FACT_EPILOGUE_NONE,4|--a row --b row --ep none --terms 6
prep_f16_t3_rr_none|128,128,32,3,true,true,FACT_EPILOGUE_NONE,6,fact::split_gemm::PartsFp16Scaled|--a row --b row --ep none --terms 3
prep_f16_t3_rc_bias|128,128,32,3,true,false,FACT_EPILOGUE_BIAS,6,fact::split_gemm::PartsFp16Scaled|--a row --b col --ep bias --terms 3
hyb_f16_t3_rr_none|128,128,32,3,true,true,FACT_EPILOGUE_NONE,5,fact::split_gemm::PartsFp16Scaled|--a row --b row --ep none --terms 3
hyb_f16_t3_cc_c|128,128,32,3,false,false,FACT_EPILOGUE_C,5,fact::split_gemm::PartsFp16Scaled|--a col --b col --ep c --terms 3
hyb_f16_t3_rc_bias|128,128,32,3,true,false,FACT_EPILOGUE_BIAS,5,fact::split_gemm::PartsFp16Scaled|--a row --b col --ep bias --terms 3
hyb_f16_t3_cr_none|128,128,32,3,false,true,FACT_EPILOGUE_NONE,5,fact::split_gemm::PartsFp16Scaled|--a col --b row --ep none --terms 3
hyb_t6_rr_none|128,128,32,6,true,true,FACT_EPILOGUE_NONE,3|--a row --b row --ep none --terms 6
hybp_f16_t3_rr_none|128,128,32,3,true,true,FACT_EPILOGUE_NONE,5,fact::split_gemm::PartsFp16Scaled|--a row --b row --ep none --terms 3
hybp_f16_t3_cc_c|128,128,32,3,false,false,FACT_EPILOGUE_C,5,fact::split_gemm::PartsFp16Scaled|--a col --b col --ep c --terms 3
"
SMALL_SHAPES="--shape 1,200,136,100 --shape 3,132,260,520 --shape 2,36,20,4096 --shape 1,256,256,65536"
BIG_SHAPES="--shape 1,4096,4096,4096 --shape 128,512,2048,1024 --shape 1,256,256,524288"
# Rows and base pointers that are not 16-byte aligned (odd extents, --pad 1 --offset 1): the
# pre kernels' pre-pass reads them with 4-byte copies; an irregular shape is timed beside its
# aligned neighbour (pre*_rr_none).
UNALIGNED_SHAPES="--shape 1,201,137,99 --shape 3,131,259,517 --shape 2,37,21,4097 --pad 1 --offset 1"
IRREGULAR_TIME_SHAPES="--shape 1,3001,2050,1999 --shape 1,3000,2048,2000"
# handoff_check M,N1,K1,N2: edge tiles and a last image block past N1, then the minGPT MLP
# (c_fc -> c_proj) at B x T = 65536 rows (timed when HANDOFF_TIME is set).
HANDOFF_SHAPES="--shape 200,136,100,72 --shape 300,260,200,132 --shape 4096,3072,768,768"
HANDOFF_TIME_SHAPES="--shape 65536,3072,768,768"
# LayerNorm libraries writing a GEMM's A image (templates/layernorm_image.cuh; checked by
# tests/gpu/ln_image_check.cu against the pre GEMMs pre_f16_t3_rc_bias and pre_t6_rr_none):
# name | cols,warps per row,vector width,residual mode | ln_image_check flags
LN_TABLE="
ln_c768_w1_v4_plain|768,1,4,fact::layernorm::kNoResidual|--cols 768 --residual none
ln_c768_w2_v4_plain|768,2,4,fact::layernorm::kNoResidual|--cols 768 --residual none
ln_c768_w4_v4_plain|768,4,4,fact::layernorm::kNoResidual|--cols 768 --residual none
ln_c768_w8_v4_plain|768,8,4,fact::layernorm::kNoResidual|--cols 768 --residual none
ln_c768_w1_v2_res_sum|768,1,2,fact::layernorm::kResidualWritesSum|--cols 768 --residual res_sum
ln_c200_w1_v1_res|200,1,1,fact::layernorm::kResidual|--cols 200 --residual res
"
# ROWS,N: a partial 128-row tile, then 4096 rows; timed (LN_TIME=1): the block's LN -> c_fc.
LN_SHAPES="--shape 200,136,0,0 --shape 4096,256,0,0"
LN_TIME_SHAPES="--shape 65536,3072,0,0"

build() {
  mkdir -p "$DEV/src"
  local flags=(-std=c++17 -O3 -DNDEBUG --expt-relaxed-constexpr -gencode=arch=compute_90a,code=sm_90a
               -I "$CUTLASS_DIR/include" -I "$CUTLASS_DIR/tools/util/include" -I "$ROOT/include"
               -I "$ROOT/templates" -Xptxas -v -shared -Xcompiler -fPIC)
  local check
  for check in split_gemm_check handoff_check ln_image_check; do
    "$NVCC" -std=c++17 -O2 -gencode=arch=compute_90a,code=sm_90a -I "$ROOT/include" \
      "$ROOT/tests/gpu/$check.cu" -o "$DEV/$check" -lcublas -ldl || return 1
  done
  local pids=() line name cfg header ns op
  # A full build drops libraries of variants no longer in the table (device checks every .so's SASS).
  [[ -z "${VARIANTS:-}" ]] && rm -rf "$DEV"/*.so "$DEV"/*.ptxas.txt "$DEV/src"/*.cu "$DEV/v1" "$DEV/v2"
  while IFS= read -r line; do
    [[ -z "$line" ]] && continue
    name="${line%%|*}"; cfg="${line#*|}"; cfg="${cfg%%|*}"
    [[ -n "${VARIANTS:-}" && " $VARIANTS " != *" $name "* ]] && continue
    header=split_gemm_sm90.cuh ns=fact::split_gemm
    [[ "$name" == ws_* ]] && header=split_gemm_ws_sm90.cuh ns=fact::split_gemm::ws
    [[ "$name" == pre_* ]] && header=split_gemm_pre_sm90.cuh ns=fact::split_gemm::pre
    [[ "$name" == hyb_* ]] && header=split_gemm_hybrid_sm90.cuh ns=fact::split_gemm::hybrid
    # prep_: the pre kernel launched persistent (pre::PersistentOperation).
    op=Operation
    [[ "$name" == prep_* ]] && header=split_gemm_pre_sm90.cuh ns=fact::split_gemm::pre op=PersistentOperation
    # hybp_: the hybrid kernel launched persistent (hybrid::PersistentOperation).
    [[ "$name" == hybp_* ]] && header=split_gemm_hybrid_sm90.cuh ns=fact::split_gemm::hybrid op=PersistentOperation
    cat >"$DEV/src/$name.cu" <<EOF
// Generated by scripts/split_gemm_dev.sh for the split_gemm development check.
#include "$header"
#include "fact_export.cuh"
using FactSplitGemmOp = $ns::$op<$ns::Config<$cfg>>;
FACT_EXPORT_GEMM(FactSplitGemmOp, "split_gemm_dev_$name")
EOF
    "$NVCC" "${flags[@]}" "$DEV/src/$name.cu" -o "$DEV/$name.so" >"$DEV/$name.ptxas.txt" 2>&1 &
    pids+=($!)
    if (( ${#pids[@]} >= JOBS )); then wait "${pids[0]}" || { cat "$DEV/$name.ptxas.txt"; return 1; }; pids=("${pids[@]:1}"); fi
  done <<<"$VARIANT_TABLE"
  while IFS= read -r line; do
    [[ -z "$line" ]] && continue
    name="${line%%|*}"; cfg="${line#*|}"; cfg="${cfg%%|*}"
    [[ -n "${VARIANTS:-}" && " $VARIANTS " != *" $name "* ]] && continue
    cat >"$DEV/src/$name.cu" <<EOF
// Generated by scripts/split_gemm_dev.sh for the LayerNorm image check.
#include "layernorm_image.cuh"
#include "fact_export.cuh"
using FactConfig = fact::layernorm::Config<$cfg>;
using FactImages = fact::layernorm::ImageWriters<FactConfig,
    fact::layernorm::ImageFormat<fact::split_gemm::PartsFp16Scaled, 2>, fact::layernorm::ImageFormat<fact::split_gemm::PartsBf16, 3>>;
FACT_EXPORT_LAYERNORM(fact::layernorm::Operation<FactConfig>, FactImages, "split_gemm_dev_$name")
EOF
    "$NVCC" "${flags[@]}" "$DEV/src/$name.cu" -o "$DEV/$name.so" >"$DEV/$name.ptxas.txt" 2>&1 &
    pids+=($!)
    if (( ${#pids[@]} >= JOBS )); then wait "${pids[0]}" || { cat "$DEV/$name.ptxas.txt"; return 1; }; pids=("${pids[@]:1}"); fi
  done <<<"$LN_TABLE"
  for p in "${pids[@]}"; do wait "$p" || return 1; done
  # The main kernel's ptxas lines follow its "Compiling entry function" line (the reduce
  # kernel's may come before or after it).
  for f in "$DEV"/*.ptxas.txt; do
    echo "$(basename "$f" .ptxas.txt): main kernel" \
      "$(awk '/Compiling entry function/ { main = /split_gemm_kernel/ }
             main && /bytes spill stores/ { match($0, /[0-9]+ bytes spill stores/); spill = substr($0, RSTART, RLENGTH) }
             main && /Used [0-9]+ registers/ { match($0, /Used [0-9]+ registers/); regs = substr($0, RSTART, RLENGTH) }
             END { print regs ", " spill }' "$f")"
  done
}

device() {
  : "${OUT:=/tmp/split_gemm_out}"; mkdir -p "$OUT"
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
  if command -v cuobjdump >/dev/null; then
    for so in "$DEV"/*.so; do
      echo "$(basename "$so"): HGMMA $(cuobjdump -sass "$so" | grep -c HGMMA) LDL/STL $(cuobjdump -sass "$so" | grep -c 'LDL\|STL')"
    done | tee "$OUT/sass.txt"
  fi
  if [[ "${SPLIT_GEMM_PREMISE:-1}" != 0 ]]; then
    PYTHONUNBUFFERED=1 timeout 300 python3 "$ROOT/tests/gpu/split_gemm_premise.py" 2>&1 | tee "$OUT/premise.txt"
  fi
  local line name flags rc=0
  : >"$OUT/check.txt"
  while IFS= read -r line; do
    [[ -z "$line" ]] && continue
    name="${line%%|*}"; flags="${line##*|}"
    [[ -n "${VARIANTS:-}" && " $VARIANTS " != *" $name "* ]] && continue
    [[ -f "$DEV/$name.so" ]] || { echo "missing $DEV/$name.so" | tee -a "$OUT/check.txt"; rc=1; continue; }
    echo "== $name small" | tee -a "$OUT/check.txt"
    timeout 120 "$DEV/split_gemm_check" --lib "$DEV/$name.so" $flags $SMALL_SHAPES 2>&1 | tee -a "$OUT/check.txt" || rc=1
    if [[ "$name" == pre* ]]; then
      echo "== $name unaligned" | tee -a "$OUT/check.txt"
      timeout 120 "$DEV/split_gemm_check" --lib "$DEV/$name.so" $flags $UNALIGNED_SHAPES 2>&1 \
        | tee -a "$OUT/check.txt" || rc=1
    fi
    if [[ "$name" == pre*_rr_none ]]; then
      echo "== $name irregular" | tee -a "$OUT/check.txt"
      timeout 180 "$DEV/split_gemm_check" --lib "$DEV/$name.so" $flags $IRREGULAR_TIME_SHAPES --time --reps 50 2>&1 \
        | tee -a "$OUT/check.txt" || rc=1
    fi
    if [[ "$name" == pre*_rc_bias || "$name" == pre*_t6_rr_none ]]; then
      # Operand hand-off (tests/gpu/handoff_check.cu): this variant as both GEMMs.
      local b=col ep=bias
      [[ "$name" == *_rr_none ]] && b=row ep=none
      echo "== $name hand-off" | tee -a "$OUT/check.txt"
      timeout 240 "$DEV/handoff_check" --lib "$DEV/$name.so" --b $b --ep $ep $HANDOFF_SHAPES \
        ${HANDOFF_TIME:+--time --reps 50 $HANDOFF_TIME_SHAPES} 2>&1 | tee -a "$OUT/check.txt" || rc=1
      timeout 120 "$DEV/handoff_check" --lib "$DEV/$name.so" --b $b --ep $ep --batch 3 $HANDOFF_SHAPES 2>&1 \
        | tee -a "$OUT/check.txt" || rc=1
    fi
    if [[ "$name" == *_rr_none ]]; then
      echo "== $name big" | tee -a "$OUT/check.txt"
      timeout 240 "$DEV/split_gemm_check" --lib "$DEV/$name.so" $flags $BIG_SHAPES --time --reps 50 2>&1 \
        | tee -a "$OUT/check.txt" || rc=1
    fi
  done <<<"$VARIANT_TABLE"
  # LayerNorm -> GEMM image: each LN library against the f16x3 (B col, bias) and bf16x6 (B row)
  # pre kernels; the plain ones also timed on the block's LN -> c_fc shape when LN_TIME is set.
  local gemm
  while IFS= read -r line; do
    [[ -z "$line" ]] && continue
    name="${line%%|*}"; flags="${line##*|}"
    [[ -n "${VARIANTS:-}" && " $VARIANTS " != *" $name "* ]] && continue
    for gemm in "pre_f16_t3_rc_bias|--b col --ep bias" "pre_t6_rr_none|--b row --ep none"; do
      [[ -f "$DEV/${gemm%%|*}.so" ]] || continue
      echo "== $name -> ${gemm%%|*}" | tee -a "$OUT/check.txt"
      timeout 240 "$DEV/ln_image_check" --ln "$DEV/$name.so" --lib "$DEV/${gemm%%|*}.so" ${gemm#*|} $flags \
        $LN_SHAPES 2>&1 | tee -a "$OUT/check.txt" || rc=1
    done
    if [[ -n "${LN_TIME:-}" && "$name" == *_plain && -f "$DEV/pre_f16_t3_rc_bias.so" ]]; then
      timeout 240 "$DEV/ln_image_check" --ln "$DEV/$name.so" --lib "$DEV/pre_f16_t3_rc_bias.so" --b col $flags \
        $LN_TIME_SHAPES --time --reps 50 2>&1 | tee -a "$OUT/check.txt" || rc=1
    fi
  done <<<"$LN_TABLE"
  if [[ -n "${SPLIT_GEMM_NCU:-}" && -f "$DEV/$SPLIT_GEMM_NCU.so" ]] && command -v ncu >/dev/null; then
    # The first two launches of the kernels matching SPLIT_GEMM_NCU_KERNEL (default: the
    # main kernel) of the named variant on 4096^3 (e.g. SPLIT_GEMM_NCU=t6_rr_none; with
    # SPLIT_GEMM_NCU_KERNEL=split_operand_tiles: A's and B's pre-pass). With the knob set,
    # the same on the bmm shape into ncu_bmm.txt.
    local ncu_args=(--clock-control none -k "regex:${SPLIT_GEMM_NCU_KERNEL:-split_gemm_kernel}" -c 2
                    --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats
                    --section SchedulerStats)
    # The variant's layouts and epilogue (its check flags).
    flags="$(grep "^$SPLIT_GEMM_NCU|" <<<"$VARIANT_TABLE" | cut -d'|' -f3)"
    timeout 120 ncu "${ncu_args[@]}" "$DEV/split_gemm_check" --lib "$DEV/$SPLIT_GEMM_NCU.so" $flags \
      --shape 1,4096,4096,4096 >"$OUT/ncu.txt" 2>&1
    if [[ -n "${SPLIT_GEMM_NCU_KERNEL:-}" ]]; then
      timeout 180 ncu "${ncu_args[@]}" "$DEV/split_gemm_check" --lib "$DEV/$SPLIT_GEMM_NCU.so" $flags \
        --shape 128,512,2048,1024 >"$OUT/ncu_bmm.txt" 2>&1
    fi
  fi
  echo "==== summary"
  grep -h "^variant\|^TIME\|^RESULT\|WRONG\|refused\|REFUSE\|FAIL\|PASSED\|split_gemm_check:\|handoff_check:\|ln_image_check:" "$OUT/check.txt"
  grep -h "bar1e-4=miss" "$OUT/check.txt" | cut -c1-200
  return $rc
}

case "${1:-}" in
  build) build ;;
  device) device ;;
  *) echo "usage: $0 build|device" >&2; exit 2 ;;
esac

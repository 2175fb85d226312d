#!/usr/bin/env bash
# ON THE GPU MACHINE (device tool), from the repo root, carry [".whl", ".device/sglang_py.tar.xz"]:
# one call for the kernel work of a session. Every step has its own time limit; everything lands in $OUT
# (kernels.tar.gz with every log/JSON/report + the main logs as plain files).
#   bash bench/device_kernels.sh [steps]     steps: kernelsquick,variants,ncu,kda,whole,kdaquick,kdatune,kdafinal,kdaall,kdarest,
#                                            kdah8,kdabd,stages,host,layer,pipetune,overlap,gluon,gluonvarlen,gluontests,gluonncu,ncuvariants,kdahf,wavetune,gluonpipe,layerstages,hostgluon,profilehost,evalgpu,gputests,
#                                            layerdirect,fwdsplit,fwdhoverlap,gluonshapes,gluonvarlendiag,diagprec,roofline,invprec,kernels,
#                                            streamdiag,ab,fwdo,diagoverlap,fwdh,abvars,kdawhole,kdahost,onchip,kdagraph,pfk
#                                            (default: variants,ncu,kda)
set -u
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/trinv-kernels}
steps=${1:-variants,ncu,kda}
kr=${KR:-/tmp/kr}  # scratch (device_parallel.sh gives each GPU its own)
mkdir -p "$out" "$kr"
source bench/device_env.sh > $kr/env.log 2>&1; cat $kr/env.log
nvidia-smi -L | tee -a $kr/env.log
t0=$(date +%s)
has() { case ",$steps," in *",$1,"*) return 0;; esac; return 1; }
if has kernelsquick; then  # issue 3: adversarial families (Triton and Gluon intra rows) + the T=8192 H=32 shape
  timeout 300 python3 -m sglang_trinv.cli bench kernels --quick --no-fla --no-whole --out $kr/kernelsquick \
    > $kr/kernelsquick.log 2>&1
  grep -E "family|intra" $kr/kernelsquick.log | tail -40
  cp $kr/kernelsquick/kernels.md "$out/kernels_quick.md" 2>/dev/null
  echo "kernelsquick: $(( $(date +%s) - t0 )) s"
fi
if has variants; then
  timeout ${VARIANTS_TIMEOUT:-240} python3 bench/bench_intra_variants.py $kr/variants 2>&1 | tee $kr/variants.log | grep -v "^{'T'"
  echo "variants: $(( $(date +%s) - t0 )) s"
fi
if has ncu; then
  timeout 110 ncu --clock-control none --profile-from-start off --set full \
      --kernel-name regex:'gdn_intra|recompute_w_u|kkt_solve' -o $kr/intra -f python3 bench/profile_intra.py \
      > $kr/ncu_run.log 2>&1
  tail -3 $kr/ncu_run.log
  ncu -i $kr/intra.ncu-rep --page details > $kr/ncu_details.txt 2>&1
  ncu -i $kr/intra.ncu-rep --page raw --csv > $kr/ncu_raw.csv 2>&1
  grep -E "gdn_intra|recompute|kkt_solve|Duration|Registers Per|Achieved Occupancy|Theoretical Occupancy|DRAM Throughput|Memory Throughput|Local Memory|Block Limit Reg|Warp Cycles Per Issued|Shared Memory Config" $kr/ncu_details.txt | head -120
  echo "ncu: $(( $(date +%s) - t0 )) s"
fi
if has kda; then
  timeout 140 python3 bench/bench_kda.py --out $kr/kda > $kr/kda.log 2>&1
  tail -25 $kr/kda.log
  echo "kda: $(( $(date +%s) - t0 )) s"
fi
if has whole; then
  timeout 230 python3 bench/bench_whole.py $kr/whole > $kr/whole.log 2>&1
  grep -E "^\| " $kr/whole.log | tail -60
  echo "whole: $(( $(date +%s) - t0 )) s"
fi
if has kdaquick; then
  # without the one-kernel rows (the old single-kernel design: with them the step outlasted 390 s in s21)
  timeout ${KDAQUICK_TIMEOUT:-200} python3 bench/bench_kda.py --quick --no-families --no-one-kernel --out $kr/kda \
    > $kr/kda.log 2>&1
  tail -40 $kr/kda.log
  echo "kdaquick: $(( $(date +%s) - t0 )) s"
fi
if has kdatune; then
  timeout 240 python3 bench/bench_kda.py --quick --no-families --no-whole --tune --out $kr/kdatune \
    > $kr/kdatune.log 2>&1
  grep -E "tune|intra" $kr/kdatune.log | tail -40
  echo "kdatune: $(( $(date +%s) - t0 )) s"
fi
if has kdafinal; then  # issue 5: a short sweep around the default, then stock vs blockdoubling (H=32, 8) + whole
  timeout 300 python3 bench/bench_kda.py --quick --no-families --no-one-kernel --methods blockdoubling --tune \
    --tune-configs 2/32/32/2,2/32/32/3,2/32/64/2,2/64/64/2 --out "$out/kda" > "$out/kda.log" 2>&1
  grep -E "tune|intra|kda_fwd|\[" "$out/kda.log" | tail -30
  echo "kdafinal: $(( $(date +%s) - t0 )) s"
fi
if has kdaall; then  # issue 5: stock vs every method at the default launch, H=32 and H=8, whole forward on both
  timeout 420 python3 bench/bench_kda.py --no-families --no-one-kernel --shapes 8192:32:1:0,8192:8:1:0 \
    --out "$out/kda-all" > "$out/kda-all.log" 2>&1
  grep -E "intra|kda_fwd|\[" "$out/kda-all.log" | tail -30
  echo "kdaall: $(( $(date +%s) - t0 )) s"
fi
if has kdarest; then  # issue 5: blockdoubling on safe_gate, varlen and long shapes
  timeout 420 python3 bench/bench_kda.py --no-families --no-one-kernel --methods blockdoubling \
    --shapes 8192:32:1:1,8192:32:8:0,8192:32:8:1,32768:32:1:0,8192:8:1:1 --out "$out/kda-rest" > "$out/kda-rest.log" 2>&1
  grep -E "intra|kda_fwd|\[" "$out/kda-rest.log" | tail -30
  echo "kdarest: $(( $(date +%s) - t0 )) s"
fi
if has kdah8; then  # issue 5: stock vs every method at H=8 (TP 4), whole forward for blockdoubling
  timeout 430 python3 bench/bench_kda.py --no-families --no-one-kernel --shapes 8192:8:1:0 \
    --whole-methods blockdoubling --out "$out/kda-h8" > "$out/kda-h8.log" 2>&1
  grep -E "intra|kda_fwd|\[" "$out/kda-h8.log" | tail -30
  echo "kdah8: $(( $(date +%s) - t0 )) s"
fi
if has kdabd; then  # issue 5: the recommended method, H=32 and H=8, intra and whole chunk_kda_fwd
  timeout 330 python3 bench/bench_kda.py --no-families --no-one-kernel --methods blockdoubling \
    --shapes 8192:32:1:0,8192:8:1:0 --out "$out/kda-bd" > "$out/kda-bd.log" 2>&1
  grep -E "intra|kda_fwd|\[" "$out/kda-bd.log" | tail -30
  echo "kdabd: $(( $(date +%s) - t0 )) s"
fi
if has stages; then  # issue 3: the whole GDN forward by stage, Amdahl bound for the intra swap
  timeout 330 python3 bench/bench_stages.py --out "$out/stages" > "$out/stages.log" 2>&1
  grep -E "^\| " "$out/stages.log" | tail -20
  echo "stages: $(( $(date +%s) - t0 )) s"
fi
if has host; then  # issue 3: host cost of a launch vs GPU time (small/varlen shapes), stock vs ours
  # HOST_ARGS e.g. "--head-dim 64 --shape 1024,4,2,8" (the shipped tiny model's layer)
  timeout ${HOST_TIMEOUT:-200} python3 bench/bench_host.py --out "$out/host" ${HOST_ARGS:-} > "$out/host.log" 2>&1
  grep -E "^\| " "$out/host.log" | tail -40
  echo "host: $(( $(date +%s) - t0 )) s"
fi
if has layer; then  # issue 3: whole GDN forward, stock vs plugin, 12 shapes, errors vs the fp64 twin
  # LAYER_SHAPES="T,H,Hg,SEQS;…" adds one --shape per entry (device_parallel.sh's VAR=x values hold no spaces)
  shapes=${LAYER_SHAPES:-}; for s in ${shapes//;/ }; do LAYER_ARGS="${LAYER_ARGS:-} --shape $s"; done
  timeout ${LAYER_TIMEOUT:-420} python3 -m sglang_trinv.cli bench layer ${LAYER_ARGS:-} --out "$out/layer" \
    > "$out/layer.log" 2>&1  # LAYER_ARGS: e.g. "--shape 8192,32,16,1 --shape …" for a part of the 12 shapes
  grep -E "^\| " "$out/layer.log" | tail -60
  echo "layer: $(( $(date +%s) - t0 )) s"
fi
if has layerdirect; then  # issue 3: whole forward at the shapes short of 1.15x, direct launch off vs on
  for d in 0 1; do
    SGLANG_TRINV_DIRECT_LAUNCH=$d timeout ${LAYER_TIMEOUT:-200} python3 -m sglang_trinv.cli bench layer \
      --shape 8192,32,16,1 --shape 8192,32,16,8 --shape 32768,8,4,1 --shape 8192,8,4,1 \
      --out "$out/layer_direct$d" > "$out/layer_direct$d.log" 2>&1
    grep -E "^\| " "$out/layer_direct$d.log" | tail -30
    echo "layerdirect $d: $(( $(date +%s) - t0 )) s"
  done
fi
if has fwdsplit; then  # issue 3: whole forward cut after each stage (graph), o memset vs not
  timeout 240 python3 bench/bench_forward_split.py "$out/fwdsplit" > "$out/fwdsplit.log" 2>&1
  grep -E "^\| " "$out/fwdsplit.log" | tail -40
  echo "fwdsplit: $(( $(date +%s) - t0 )) s"
fi
if has fwdhoverlap; then  # whole forward with our stages overlapped with fwd_h (one sequence cut into parts)
  timeout ${FWDH_TIMEOUT:-400} python3 bench/bench_fwd_h_overlap.py "$out/fwdhoverlap" > "$out/fwdhoverlap.log" 2>&1
  grep -E "^\| " "$out/fwdhoverlap.log" | tail -40
  echo "fwdhoverlap: $(( $(date +%s) - t0 )) s"
fi
if has streamdiag; then  # the one-wave fused kernel's stream: its loads / stores kept on one row (diagnostic)
  sd=${STREAMDIAG_SHAPES:-}  # "T,H,Hg;…" (default in the script: 8192,8,4 and 8192,32,16)
  timeout ${STREAMDIAG_TIMEOUT:-200} python3 bench/diag_stream_reads.py "$out/streamdiag" ${sd//;/ } \
    > "$out/streamdiag.log" 2>&1
  tail -12 "$out/streamdiag.log"
  echo "streamdiag: $(( $(date +%s) - t0 )) s"
fi
if has ab; then  # issue 3: a Tuning change (AB_TUNING="l2_warm=32", "pdl=1", …) on / off interleaved: intra,
  # pipeline launch, whole forward (fused pipeline and intra only) next to stock
  AB_SHAPES="${AB_SHAPES:-8192,8,4,1;8192,8,4,8}" timeout ${AB_TIMEOUT:-300} python3 bench/ab_tuning.py \
    "$out/ab" > "$out/ab.log" 2>&1
  grep -E "^on: |^\| " "$out/ab.log" | tail -20
  echo "ab: $(( $(date +%s) - t0 )) s"
fi
if has abvars; then  # issue 3: stock and ours with SGLang's state-kernel variables set alike (the fair reference for
  # the tuned state launch: stock can be given the same constants); ABVARS="BV,warps,stages;…"
  IFS=';' read -ra forms <<< "${ABVARS:-16,2,3;32,4,3}"
  for f in "${forms[@]}"; do
    IFS=',' read -r bv nw ns <<< "$f"
    SGLANG_GDN_CHUNK_H_BV=$bv SGLANG_GDN_CHUNK_H_NUM_WARPS=$nw SGLANG_GDN_CHUNK_H_NUM_STAGES=$ns AB_TUNING= AB_ENV= \
      AB_SHAPES="${AB_SHAPES:-8192,8,4,1;8192,8,4,8}" timeout ${AB_TIMEOUT:-300} python3 bench/ab_tuning.py \
      "$out/abvars_${bv}_${nw}_${ns}" > "$out/abvars_${bv}_${nw}_${ns}.log" 2>&1
    echo "SGLang's state kernel at BV=$bv, $nw warps, $ns stages (stock and ours):"
    grep -E "^\| " "$out/abvars_${bv}_${nw}_${ns}.log" | grep "whole forward |" | tail -20
  done
  echo "abvars: $(( $(date +%s) - t0 )) s"
fi
if has kdawhole; then  # issue 3: the whole chunk_kda_fwd, stock vs the plugin with the tuned state launch and with
  # SGLang's (one row each), at KDA_SHAPES (T:H:SEQS:SAFE_GATE,…; its fp64 twin is slow: > 80 s a shape at T=8192)
  timeout ${KDAWHOLE_TIMEOUT:-400} python3 -m sglang_trinv.cli bench kda --shapes "${KDA_SHAPES:-8192:8:1:0,8192:32:1:0}" \
    --methods blockdoubling --no-families --no-one-kernel --out "$out/kdawhole" > "$out/kdawhole.log" 2>&1
  grep -E "kda_fwd|^\[|rror" "$out/kdawhole.log" | tail -20
  echo "kdawhole: $(( $(date +%s) - t0 )) s"
fi
if has kdahost; then  # issue 3: where chunk_kda_fwd's host time goes, stock / plugin tuned / plugin SGLang's launch
  timeout ${KDAHOST_TIMEOUT:-200} python3 bench/profile_kda_host.py "$out/kdahost" ${KDAHOST_ARGS:-} > "$out/kdahost.log" 2>&1
  grep -E "^## |rror" "$out/kdahost.log" | tail -10
  echo "kdahost: $(( $(date +%s) - t0 )) s"
fi
if has onchip; then  # issue 3, NOTES item 0 (d): the one-warp Gluon prototype with v on chip, errors vs fp64 and
  # CUDA-graph times beside our Triton kernel and stock (T=8192 H=8: the intra target's shape)
  timeout ${ONCHIP_TIMEOUT:-200} python3 bench/proto_onchip_intra.py --gpu "$out/onchip" > "$out/onchip.log" 2>&1
  tail -8 "$out/onchip.log"
  echo "onchip: $(( $(date +%s) - t0 )) s"
fi
if has fwdo; then  # issue 3: the output stage's launch constants (bitwise vs stock's), whole forward at the best
  timeout ${FWDO_TIMEOUT:-300} python3 bench/sweep_fwd_o.py "$out/fwdo" > "$out/fwdo.log" 2>&1
  grep -E "^\| " "$out/fwdo.log" | tail -40
  echo "fwdo: $(( $(date +%s) - t0 )) s"
fi
if has fwdh; then  # issue 3: the state recurrence's launch constants (bitwise vs SGLang's defaults)
  fwdh=fwdh${FWDH_GATE:+_$FWDH_GATE}  # FWDH_GATE=gk: KDA's per-key gate, SGLang's own kernel
  timeout ${FWDH_TIMEOUT:-300} python3 bench/sweep_fwd_h.py "$out/$fwdh" > "$out/$fwdh.log" 2>&1
  grep -E "^\| |rror" "$out/$fwdh.log" | tail -40
  echo "fwdh: $(( $(date +%s) - t0 )) s"
fi
if has diagoverlap; then  # issue 3: the state / output overlap's time, by part and signal form (bitwise checked)
  timeout ${DIAG_TIMEOUT:-300} python3 bench/diag_overlap.py "$out/diagoverlap" > "$out/diagoverlap.log" 2>&1
  grep -E "^\| |Error|error" "$out/diagoverlap.log" | tail -40
  echo "diagoverlap: $(( $(date +%s) - t0 )) s"
fi
if has overlap; then  # issue 3: does the inversion hide behind the w/u stream on two streams?
  timeout 170 python3 bench/bench_overlap.py "$out/overlap" > "$out/overlap.log" 2>&1
  tail -12 "$out/overlap.log"
  echo "overlap: $(( $(date +%s) - t0 )) s"
fi
if has gluon; then  # issue 3: the warp-specialized Gluon intra vs ours vs stock, errors vs fp64 (a hang = a barrier bug)
  timeout 300 python3 bench/gluon_intra.py --gpu "$out/gluon" > "$out/gluon.log" 2>&1
  tail -12 "$out/gluon.log"
  echo "gluon: $(( $(date +%s) - t0 )) s"
fi
if has wavetune; then  # issue 3: Triton num_warps per problem size, Gluon pipeline CS=0/1, Gluon varlen lengths
  timeout 420 python3 bench/bench_wave_tuning.py "$out/wavetune" > "$out/wavetune.log" 2>&1
  tail -8 "$out/wavetune.log"
  echo "wavetune: $(( $(date +%s) - t0 )) s"
fi
if has gluonshapes; then  # issue 3: Gluon launch variants (pairs, staging, each partition alone) at every shape
  timeout ${GLUONSHAPES_TIMEOUT:-480} python3 bench/gluon_intra.py --shapes "$out/gluonshapes" > "$out/gluonshapes.log" 2>&1
  grep -E "^\| " "$out/gluonshapes.log" | tail -120
  echo "gluonshapes: $(( $(date +%s) - t0 )) s"
fi
if has gluonvarlen; then  # issue 3: where the Gluon kernel's varlen time goes (each partition alone, pipeline launch)
  timeout 300 python3 bench/gluon_intra.py --varlen "$out/gluonvarlen" > "$out/gluonvarlen.log" 2>&1
  tail -20 "$out/gluonvarlen.log"
  echo "gluonvarlen: $(( $(date +%s) - t0 )) s"
fi
if has gluonvarlendiag; then  # issue 3: the varlen penalty of the Gluon kernel per shape
  timeout 300 python3 bench/gluon_intra.py --varlen-diag "$out/gluonvarlendiag" > "$out/gluonvarlendiag.log" 2>&1
  grep -E "^\| " "$out/gluonvarlendiag.log" | tail -60; tail -3 "$out/gluonvarlendiag.log"
  echo "gluonvarlendiag: $(( $(date +%s) - t0 )) s"
fi
if has diagprec; then  # issue 3: merge precisions side by side (families: w/u/A and whole o; the 12 shapes)
  DIAG_PRECISIONS=${DIAG_PRECISIONS:-"bf16x3/bf16x3+tf32,bf16x3/bf16x3,bf16x3/bf16x3+bf16x3*tf32"} \
    timeout ${DIAGPREC_TIMEOUT:-560} python3 bench/bench_diag_precision.py "$out/diagprec" ${DIAGPREC_ARGS:-} \
    > "$out/diagprec.log" 2>&1
  grep -E "^\| " "$out/diagprec.log" | tail -100
  echo "diagprec: $(( $(date +%s) - t0 )) s"
fi
shape_flags() { local x; for x in ${1//;/ }; do printf -- "--shape %s " "$x"; done; }  # "a;b" -> --shape a --shape b
if has kernels; then  # issue 3: the kernel benchmark (every method, FLA's solve_tril, whole forward) at KERNELS_SHAPES
  # ("T,H,Hg,seqs;…", default all 12); KERNELS_FAMILIES=0 skips the adversarial families
  timeout ${KERNELS_TIMEOUT:-540} python3 -m sglang_trinv.cli bench kernels $(shape_flags "${KERNELS_SHAPES:-}") \
    $([ "${KERNELS_FAMILIES:-1}" = 0 ] && echo --no-families) --out "$out/kernels" > "$out/kernels.log" 2>&1
  grep -E "^\| " "$out/kernels.log" | tail -80
  echo "kernels: $(( $(date +%s) - t0 )) s"
fi
if has roofline; then  # issue 3: intra / KKᵀ+inverse vs a kernel that only moves their bytes (reachable speed-up)
  timeout ${ROOFLINE_TIMEOUT:-420} python3 -m sglang_trinv.cli bench roofline $(shape_flags "${ROOFLINE_SHAPES:-}") \
    --out "$out/roofline" > "$out/roofline.log" 2>&1
  grep -E "^\| " "$out/roofline.log" | tail -40
  echo "roofline: $(( $(date +%s) - t0 )) s"
fi
if has invprec; then  # issue 3: the inverse-only kernels' precision (families over draws, 12 shapes, solve_tril)
  timeout ${INVPREC_TIMEOUT:-300} python3 bench/bench_inverse_precision.py "$out/invprec" > "$out/invprec.log" 2>&1
  grep -E "^\| " "$out/invprec.log" | tail -90
  echo "invprec: $(( $(date +%s) - t0 )) s"
fi
if has gluontests; then  # the Gluon kernel's GPU tests only
  timeout ${GLUONTESTS_TIMEOUT:-330} python3 -m pytest -q -m gpu -p no:cacheprovider -k gluon tests/test_kernels.py > $kr/gluontests.log 2>&1
  tail -8 $kr/gluontests.log
  echo "gluontests: $(( $(date +%s) - t0 )) s"
fi
if has gluonpipe; then  # the Gluon pipeline launch (cumsum in, no A), the few-CTA and the CUDA-graph capture tests
  timeout 200 python3 -m pytest -q -m gpu -p no:cacheprovider -k "gluon and (pipeline or few_ctas or captured or direct)" \
    tests/test_kernels.py > $kr/gluonpipe.log 2>&1
  tail -8 $kr/gluonpipe.log
  echo "gluonpipe: $(( $(date +%s) - t0 )) s"
fi
if has hostgluon; then  # issue 3: host cost and GPU-only time of the Gluon paths vs the same paths on Triton
  timeout 250 python3 bench/bench_host.py --gluon --out "$out/hostgluon" > "$out/hostgluon.log" 2>&1
  grep -E "^\| " "$out/hostgluon.log" | tail -40
  echo "hostgluon: $(( $(date +%s) - t0 )) s"
fi
if has profilehost; then  # issue 3: cProfile of the Gluon vs Triton launches (where the Gluon host time goes)
  timeout 200 python3 bench/profile_host.py "$out/profilehost" > "$out/profilehost.log" 2>&1
  grep -E "^## " "$out/profilehost.log"
  echo "profilehost: $(( $(date +%s) - t0 )) s"
fi
if has layerstages; then  # issue 3: whole GDN forward at the six stage shapes, stock vs plugin (Gluon/Triton A/B)
  timeout 400 python3 -m sglang_trinv.cli bench layer --shapes stages --out "$out/layer" > "$out/layer.log" 2>&1
  grep -E "^\| " "$out/layer.log" | tail -60
  echo "layerstages: $(( $(date +%s) - t0 )) s"
fi
if has pipetune; then  # issue 3: sweep the plugin's pipeline kernel (no A, cumsum in), whole forward at the best
  timeout 400 python3 bench/bench_pipeline_tuning.py "$out/pipetune" > "$out/pipetune.log" 2>&1
  grep -E "^\| |whole" "$out/pipetune.log" | tail -40
  echo "pipetune: $(( $(date +%s) - t0 )) s"
fi
if has evalgpu; then  # issue 6: in-process eval on the GPU (SGLang's Triton path, stock vs ours)
  timeout 150 python3 -m sglang_trinv.cli eval --backend sglang --device cuda --quiet --mc-limit 30 \
    --passkey-trials 1 --methods stock,blockdoubling,column_sweep,neumann@tf32 --out $kr/eval-gpu \
    > $kr/eval-gpu.log 2>&1
  tail -30 $kr/eval-gpu.log
  tar -czf "$out/eval-gpu.tar.gz" -C $kr eval-gpu eval-gpu.log 2>/dev/null
  echo "evalgpu: $(( $(date +%s) - t0 )) s"
fi
if has kdahf; then  # issue 3 (KDA): the default launch against the grid heads fastest (T=8192 H=32 tune), then --quick
  # KDAHF_CONFIGS: the tune candidates (repeat one to see the noise); KDAHF_SHAPES (T:H:SEQS:SAFE_GATE,…) instead of
  # --quick; KDAHF_METHODS (default every method); KDAHF_TUNE_SHAPES (T:H,…; default 8192:32)
  timeout ${KDAHF_TIMEOUT:-300} python3 bench/bench_kda.py --tune --tune-configs ${KDAHF_CONFIGS:-2/32/32/3,2/32/32/3/hf} \
    $([ -n "${KDAHF_SHAPES:-}" ] && echo --shapes "$KDAHF_SHAPES" || echo --quick) \
    ${KDAHF_METHODS:+--methods $KDAHF_METHODS} ${KDAHF_TUNE_SHAPES:+--tune-shapes $KDAHF_TUNE_SHAPES} \
    --no-families --no-one-kernel --out $kr/kdahf > $kr/kdahf.log 2>&1
  grep -E "tune|^\| " $kr/kdahf.log | head -40
  cp $kr/kdahf/kda.md "$out/kdahf.md" 2>/dev/null
  echo "kdahf: $(( $(date +%s) - t0 )) s"
fi
if has ncuvariants; then  # issue 3: the Triton fused kernel's launch forms under ncu at NCU_SHAPE (one wave)
  # the full set (s19 ran four sections): the raw page then holds the L2 lookups by unit and the DRAM bytes, to
  # see where a prefetch's lines went (NCUV_SET=basic etc. narrows it)
  timeout ${NCUV_TIMEOUT:-200} ncu --clock-control none --profile-from-start off --set ${NCUV_SET:-full} \
      --kernel-name regex:'gdn_intra|recompute_w_u|kkt_solve' -o $kr/intra_variants -f \
      python3 bench/profile_intra_variants.py > $kr/ncuvariants_run.log 2>&1
  tail -3 $kr/ncuvariants_run.log
  ncu -i $kr/intra_variants.ncu-rep --page details > "$out/ncu_variants_details.txt" 2>&1
  ncu -i $kr/intra_variants.ncu-rep --page raw --csv 2>&1 | gzip > "$out/ncu_variants_raw.csv.gz"
  zcat "$out/ncu_variants_raw.csv.gz" | python3 -c "
import csv, sys
rows = list(csv.reader(sys.stdin))
keys = ('gpu__time_duration.sum', 'dram__bytes_read.sum', 'dram__bytes_write.sum',
        'lts__t_sectors_srcunit_tex_op_read_lookup_hit.sum', 'lts__t_sectors_srcunit_tex_op_read_lookup_miss.sum')
head = rows[0]
idx = [head.index(k) for k in keys if k in head]
print('kernel', *[head[i] for i in idx])
for r in rows[2:]:
    print(r[head.index('Kernel Name')][:40] if 'Kernel Name' in head else '?', *[r[i] for i in idx])
" || true
  grep -E "gdn_intra|recompute|kkt_solve|Duration|DRAM Throughput|L2 Hit Rate|Mem Busy|Max Bandwidth|Registers Per|Warp Cycles Per Issued|Issued Warp|Stall" \
      "$out/ncu_variants_details.txt" | head -150
  echo "ncuvariants: $(( $(date +%s) - t0 )) s"
fi
if has gluonncu; then  # issue 3: why the Gluon inverter partition is slower than the Triton inverse kernel
  # NCU_CACHE=none: caches not flushed between the profiled launches (warm instruction cache and L2, as in a
  # benchmark's replays); ncu's default flushes them (a cold launch)
  timeout 200 ncu --clock-control none --cache-control ${NCU_CACHE:-all} --profile-from-start off --set full \
      --kernel-name regex:'gluon_intra|gdn_intra' \
      -o $kr/gluon -f python3 bench/gluon_intra.py --ncu > $kr/gluonncu_run.log 2>&1
  tail -3 $kr/gluonncu_run.log
  ncu -i $kr/gluon.ncu-rep --page raw --csv > $kr/gluon_raw.csv 2>&1
  ncu -i $kr/gluon.ncu-rep --page details > "$out/gluon_ncu_details.txt" 2>&1
  python3 bench/ncu_stalls.py $kr/gluon_raw.csv | tee "$out/gluon_stalls.txt"
  # per-instruction samples (where the co-running partitions stall; bench/NOTES.md item 1b)
  ncu -i $kr/gluon.ncu-rep --page source --csv --print-source sass --kernel-name regex:gluon_intra \
      > $kr/gluon_source.csv 2>&1; gzip -c $kr/gluon_source.csv > "$out/gluon_source_sass.csv.gz"
  echo "gluonncu: $(( $(date +%s) - t0 )) s"
fi
if has kdagraph; then  # KDA extend captured as SGLang's prefill CUDA graphs run it: the tests' GPU form, then the bench
  # (SGLang's KDA autotuners run again for each new bucket shape, ~100 s each: KDAGRAPH_CASES narrows the cases)
  timeout -s INT -k 30 ${KDAGRAPH_TEST_TIMEOUT:-240} python3 -m pytest -v -p no:cacheprovider tests/test_kda_graph.py \
    > "$out/kdagraph_tests.log" 2>&1
  tail -4 "$out/kdagraph_tests.log"
  timeout ${KDAGRAPH_TIMEOUT:-330} python3 -m sglang_trinv.cli bench kda-graph --out "$out/kdagraph" \
    ${KDAGRAPH_CASES:+--cases "$KDAGRAPH_CASES"} ${KDAGRAPH_ARGS:-} > "$out/kdagraph.log" 2>&1
  grep -vE "Warning|warn\(" "$out/kdagraph.log" | tail -20
  echo "kdagraph: $(( $(date +%s) - t0 )) s"
fi
if has pfk; then  # issue 3: each kernel's time inside SGLang's GDN chunk prefill (l2norm included) vs alone, every shape
  timeout ${PFK_TIMEOUT:-540} python3 bench/profile_forward_kernels.py "$out/pfk" > "$out/pfk.log" 2>&1
  grep -E "^\| |^## |rror" "$out/pfk.log" | tail -40
  echo "pfk: $(( $(date +%s) - t0 )) s"
fi
if has gputests; then  # the GPU-marked eval and kernel tests (the server test needs the server carry: device_server.sh)
  # GPUTESTS_K: a pytest -k filter; "," stands for " or ", "+" for " and ", "!" for "not " (device_parallel.sh's
  # VAR=x arguments hold no spaces), e.g. '!batches_and_barriers+!launch_variants'. -v: a run cut by its time limit
  # still names each test that passed or failed
  gk=${GPUTESTS_K:-}
  gk=${gk//,/ or }
  gk=${gk//+/ and }
  gk=${gk//!/not }
  # SIGINT at the limit: pytest then still prints the failures it has seen (a plain kill lost them in s20)
  timeout -s INT -k 30 ${GPUTESTS_TIMEOUT:-500} python3 -m pytest -v -m gpu -p no:cacheprovider ${gk:+-k "$gk"} \
    tests/test_evals.py tests/test_kda.py tests/test_kernels.py tests/test_state.py > $kr/gputests.log 2>&1
  tail -15 $kr/gputests.log
  echo "gputests: $(( $(date +%s) - t0 )) s"
fi
cp $kr/whole/whole.md $kr/whole/whole.json $kr/kda/kda.md $kr/kda/kda.json "$out/" 2>/dev/null
cp $kr/variants.log $kr/ncu_details.txt "$out/" 2>/dev/null
cp $kr/variants/intra_variants.json "$out/" 2>/dev/null
tar -czf "$out/kernels.tar.gz" --exclude='*.ncu-rep' -C "$(dirname "$kr")" "$(basename "$kr")" 2>/dev/null
rep="$kr/intra.ncu-rep"
[ -f "$rep" ] && [ "$(stat -c %s "$rep")" -lt 15000000 ] && cp "$rep" "$out/"
ls -l "$out"

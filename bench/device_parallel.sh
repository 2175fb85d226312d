#!/usr/bin/env bash
# ON THE GPU MACHINE (device tool, a multi-GPU kind), from the repo root, carry [".whl", ".device/sglang_py.tar.xz"]:
# device_kernels.sh steps side by side, one GPU per argument (an argument's comma-separated steps run one
# after the other on its GPU). Device time is counted per machine, not per GPU: four benchmarks on four GPUs
# cost what one costs. Every step still times stock and ours in its own process on its own GPU.
#   bash bench/device_parallel.sh kdaall kdarest pipetune variants
# An argument "VAR=x VAR2=y@steps" runs its steps with those environment variables (values without spaces), e.g.
#   bash bench/device_parallel.sh layer "GLUON_SHAPES=4096,8,4,1;8192,8,4,1@gluonshapes"
# Results: $OUT/parallel.tar.gz (each argument's $OUT, scratch and log) and $OUT/parallel.log.
set -u
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/trinv-parallel}
par=/tmp/par
rm -rf "$par"  # the machine may keep /tmp from an earlier session: only this run's results
mkdir -p "$out" "$par"
source bench/device_env.sh  # install once, before the children (each sources it again and finds it done)
n=$(nvidia-smi -L | wc -l)
[ "$#" -le "$n" ] || { echo "device_parallel: $# arguments for $n GPUs (join steps with commas)"; exit 2; }
i=0
pids=()
for steps in "$@"; do
  d="$par/gpu$i"
  mkdir -p "$d/out"
  echo "GPU $i: $steps"
  assigns=()
  case "$steps" in *@*) read -ra assigns <<< "${steps%@*}"; steps=${steps##*@};; esac
  env "${assigns[@]}" CUDA_VISIBLE_DEVICES=$i OUT="$d/out" KR="$d/kr" bash bench/device_kernels.sh "$steps" \
    > "$d/run.log" 2>&1 &
  pids+=($!)
  i=$((i + 1))
done
t0=$(date +%s)
for p in "${pids[@]}"; do wait "$p"; done
echo "all done in $(( $(date +%s) - t0 )) s"
i=0
for steps in "$@"; do
  echo "=================== GPU $i: $steps"
  grep -v "^{'T'\|^{'variant'" "$par/gpu$i/run.log" | tail -45
  i=$((i + 1))
done > "$out/parallel.log"
cat "$out/parallel.log"
tar -czf "$out/parallel.tar.gz" --exclude='*.ncu-rep' -C /tmp par
ls -l "$out"

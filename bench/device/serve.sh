#!/usr/bin/env bash
# Copied unchanged (but for this line) from the shared device-sglang recipe/serve.sh; bench/device_server.sh follows its conventions.
# ON THE GPU MACHINE: unpack site.tar.xz (once per machine), start a real SGLang server in the background and
# wait until it answers. Usage: bash serve.sh SITE_TAR MODEL_DIR PORT LOG [extra sglang args...]
# Prints the server's process-group id last; stop it with: kill -- -PGID
set -u
site_tar=$1 model=$2 port=$3 log=$4; shift 4
site=${SITE_DIR:-/tmp/sglang-site}
if [ ! -f "$site/.ok" ]; then
  mkdir -p "$site" && python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$site_tar" "$site" \
    && touch "$site/.ok" || { echo "unpack failed"; exit 1; }
fi
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
setsid python3 -m sglang.launch_server --model-path "$model" --host 127.0.0.1 --port "$port" \
  --attention-backend triton --sampling-backend pytorch --grammar-backend none --skip-server-warmup \
  --mem-fraction-static 0.3 --mm-feature-transport cpu "$@" > "$log" 2>&1 &
pid=$!
for i in $(seq 1 ${WAIT_S:-300}); do
  sleep 1
  kill -0 $pid 2>/dev/null || { echo "server exited early; tail of $log:"; tail -30 "$log"; exit 1; }
  python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/model_info', timeout=2)" 2>/dev/null && { echo "ready after ${i}s"; echo $pid; exit 0; }
done
echo "not ready after ${WAIT_S:-300}s; tail of $log:"; tail -30 "$log"; kill -- -$pid; exit 1

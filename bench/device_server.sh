#!/usr/bin/env bash
# ON THE GPU MACHINE (device tool), from the repo root, with carry [".device/server"] (built here by
# bench/prepare_device_server.sh): issue 7, a real SGLang 0.5.17 server with --linear-attn-inv, in one call.
#
#   bash bench/device_server.sh [bench/device_server.py options]
#   bash bench/device_server.sh --phases eager,graphs,prefill     # one GPU (or 2: prefill runs on GPU 1)
#   bash bench/device_server.sh --phases tp2                      # nvidia-h100-x2: --tp-size 2
#
# 1. unpacks .device/server/site.tar.xz (SGLang 0.5.17 + what the image lacks; the shared device-sglang recipe
#    recipe, copied in bench/device/) into $SITE_DIR (default /tmp/sglang-site), once per machine;
# 2. installs this project's wheel (.device/server/sglang_trinv-*.whl; built here offline if not carried)
#    into that site with pip --target, so the sglang.srt.plugins entry point exists;
# 3. SGLang 0.5.17 has no ServerArgs.resolve_once, which sglang_trinv/plugin/args.py hooks: if the plugin
#    refuses this SGLang, a no-op resolve_once is appended to the unpacked copy of sglang/srt/server_args.py
#    (recorded in SUMMARY.md; TRINV_NO_SHIM=1 disables it);
# 4. runs bench/device_server.py under a deadline (servers always stopped), then packs $WORK_DIR into $OUT:
#    SUMMARY.md, summary.json, device_server.tar.gz (every log and report), a few PNGs (≤ 8 files).
set -u
cd "$(dirname "$0")/.."
site=${SITE_DIR:-/tmp/sglang-site}
work=${WORK_DIR:-/tmp/trinv-server}
out=${OUT:-/tmp/trinv-out}
limit=${TRINV_LIMIT_S:-570}  # a device command may run 600 s; 30 s kill grace + packing after this
t0=$(date +%s)
rm -rf "$work/run"
mkdir -p "$work" "$out"
log=$work/setup.log
: >"$log"
say() { echo "[device_server.sh +$(($(date +%s) - t0))s] $*" | tee -a "$log"; }

tarball=.device/server/site.tar.xz
if [ ! -f "$site/.ok" ]; then
  if [ ! -f "$tarball" ]; then
    say "missing $tarball: run bench/prepare_device_server.sh on the CPU machine and pass carry [\".device/server\"]"
    exit 2
  fi
  say "unpacking $tarball ($(du -h "$tarball" | cut -f1)) into $site"
  mkdir -p "$site" && python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$tarball" "$site" \
    && touch "$site/.ok" || { say "unpack failed"; exit 2; }
fi
whl=$(ls .device/server/sglang_trinv-*.whl 2>/dev/null | tail -1)
if [ -z "$whl" ]; then
  say "no carried wheel: building one from this checkout (offline, the image's setuptools)"
  python3 -m pip wheel -q --no-deps --no-build-isolation -w "$work/whl" . >>"$log" 2>&1 \
    || { say "wheel build failed"; tail -20 "$log"; exit 2; }
  whl=$(ls "$work"/whl/sglang_trinv-*.whl | tail -1)
fi
say "installing $whl into $site"
python3 -m pip install -q --no-deps --no-index --no-compile --upgrade --target "$site" "$whl" >>"$log" 2>&1 \
  || { say "pip install failed"; tail -20 "$log"; exit 2; }

# serve.sh's environment; the repo itself is NOT on the path: servers and tools import the installed wheel
export PYTHONPATH="$site${TRINV_EXTRA_PYTHONPATH:+:$TRINV_EXTRA_PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRINV_SITE="$site"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

check_plugin() {
  (cd "$work" && python3 - 2>&1 <<'EOF'
try:
    import sglang
    from sglang_trinv.plugin import args
    args.check_hook_targets()
    print(f"ok: the plugin accepts SGLang {sglang.__version__}")
except Exception as e:  # noqa: BLE001
    print("REFUSED: " + " ".join(str(e).split()))
EOF
  ) | tail -1
}
state=$(check_plugin)
say "plugin check: $state"
shim="not needed ($state)"
if [ "${state#REFUSED}" != "$state" ]; then
  sa="$site/sglang/srt/server_args.py"
  if [ "${TRINV_NO_SHIM:-0}" = 1 ]; then
    shim="NOT applied (TRINV_NO_SHIM=1): $state"
  elif [ -f "$sa" ]; then
    grep -q "sglang-trinv device harness" "$sa" || cat >>"$sa" <<'EOF'

# sglang-trinv device harness (bench/device_server.sh): SGLang 0.5.17 has no ServerArgs.resolve_once, which the
# plugin hooks (sglang_trinv/plugin/args.py); a no-op stand-in lets the plugin register. Not part of SGLang.
if not hasattr(ServerArgs, "resolve_once"):
    def _trinv_resolve_once(self, *args, **kwargs):
        return None
    ServerArgs.resolve_once = _trinv_resolve_once
EOF
    shim="APPLIED (no-op ServerArgs.resolve_once appended to $sa) because: $state; after: $(check_plugin)"
  fi
  say "compat shim: $shim"
fi
export TRINV_COMPAT_SHIM="$shim"
nvidia-smi -L 2>&1 | tee -a "$log"

left=$((limit - ($(date +%s) - t0) - 30))
say "bench/device_server.py $* (deadline ${left}s)"
set -o pipefail
timeout -s INT -k 30 "$left" python3 bench/device_server.py --out "$work/run" --deadline-s "$((left - 20))" "$@" 2>&1 \
  | tee "$work/driver.log"
rc=$?
say "driver exit code $rc"

# ≤ 8 files back, ≤ 16 MiB each
cp "$work/run/SUMMARY.md" "$work/run/summary.json" "$out/" 2>/dev/null
a3b=$(find "$work/run" -path '*prefill/prefill.png' -not -path '*prefill-tiny*' 2>/dev/null | head -1)
[ -n "$a3b" ] && cp "$a3b" "$out/prefill-a3b.png"
[ -n "$a3b" ] && cp "${a3b%.png}.md" "$out/prefill-a3b.md"
[ -f "$work/run/eager/prefill-tiny/prefill.png" ] && cp "$work/run/eager/prefill-tiny/prefill.png" "$out/prefill-tiny.png"
[ -f "$work/run/eager/eval/report.png" ] && cp "$work/run/eager/eval/report.png" "$out/eval-eager.png"
tar -czf "$out/device_server.tar.gz" -C "$work" run setup.log driver.log 2>/dev/null
if [ "$(stat -c %s "$out/device_server.tar.gz")" -gt 15000000 ]; then  # huge server logs: keep their tails
  find "$work/run" -name 'server-*.log' -size +2M -exec sh -c 'tail -c 2000000 "$1" > "$1.tail" && mv "$1.tail" "$1"' _ {} \;
  tar -czf "$out/device_server.tar.gz" -C "$work" run setup.log driver.log
fi
ls -l "$out"
say "done (exit $rc)"
exit $rc

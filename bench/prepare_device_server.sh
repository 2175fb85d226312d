#!/usr/bin/env bash
# ON THE CPU MACHINE, before the device call of bench/device_server.sh: build what must travel into the
# git-ignored folder .device/server/ and check that it fits the 64 MiB a device call may carry.
#   .device/server/site.tar.xz              SGLang 0.5.17 + packages for the device image (bench/device/build_site.sh,
#                                           ~44 MB, a few minutes, needs PyPI; kept if already there)
#   .device/server/sglang_trinv-*.whl       this checkout as a wheel (rebuilt every time: ~0.1 MB)
# Then call the device tool with carry [".device/server"] (see bench/SERVER.md).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .device/server
if [ ! -f .device/server/site.tar.xz ]; then
  bash bench/device/build_site.sh .device/server
fi
rm -f .device/server/sglang_trinv-*.whl
python3 -m pip wheel -q --no-deps -w .device/server . 2>&1 | grep -v "is ignored: it is neither" || true
ls -l .device/server
# what a device call sends: tracked + untracked-not-ignored files (the shipped model included) + carried paths
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | awk 'END {print $1}')
carried=$(du -sb .device/server | cut -f1)
limit=$((64 * 1024 * 1024))
total=$((tree + carried))
awk -v t="$tree" -v c="$carried" 'BEGIN {printf "working tree %.1f MiB + .device/server %.1f MiB = %.1f MiB of 64 MiB\n", t / 1048576, c / 1048576, (t + c) / 1048576}'
if [ "$total" -ge "$limit" ]; then
  # the wheel holds the shipped tiny model a second time (it is in the working tree too): leave it to the device,
  # which builds it from the tree when none is carried (device_server.sh step 2)
  whl=$(du -cb .device/server/sglang_trinv-*.whl | awk 'END {print $1}')
  if [ $((total - whl)) -lt "$limit" ]; then
    rm -f .device/server/sglang_trinv-*.whl
    awk -v t=$((total - whl)) 'BEGIN {printf "wheel left out (the device builds it): %.1f MiB of 64 MiB\n", t / 1048576}'
  else
    echo "too big for one device call: carry less (e.g. rebuild site.tar.xz trimmed) or ignore large untracked files"
    exit 1
  fi
fi

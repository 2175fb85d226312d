#!/usr/bin/env bash
# Copied unchanged (but for this line) from the shared device-sglang recipe/build_site.sh (verified recipe, 2026-11-26).
# Build site.tar.xz: the Python packages a real SGLang 0.5.17 HTTP server needs on the GPU machine
# (Python 3.12, torch 2.11+cu130, triton 3.6, no internet) that its image lacks or has at a conflicting
# version, installed with pip --target for cp312/x86_64, trimmed, xz-packed to fit the 64 MiB carry limit.
# Usage (on the CPU machine): bash build_site.sh OUT_DIR      -> OUT_DIR/site.tar.xz (about 44 MB)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:?usage: build_site.sh OUT_DIR}" && cd "$1" && pwd)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"; "$work/venv/bin/pip" install -q wheel
PIP="$work/venv/bin/pip"
PLAT="--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any"
cd "$work"; mkdir -p whl whl2 trimmed site
$PIP download -q --no-deps $PLAT -d whl sglang==0.5.17 sglang-kernel==0.4.5 flashinfer_python==0.6.15.post1
$PIP download -q --no-deps $PLAT -d whl2 -r "$here/requirements-device.txt"
# sglang-kernel: drop FA3 flash_ops (1.1 GB), sm100 common_ops, flashmla_ops, infllm_ops; keep sm90 common_ops.
mkdir sk && (cd sk && unzip -q ../whl/sglang_kernel-0.4.5-*.whl -x 'sgl_kernel/flash_ops.abi3.so' \
  'sgl_kernel/sm100/*' 'sgl_kernel/flashmla_ops.abi3.so' 'sgl_kernel/infllm_ops*.so')
"$work/venv/bin/python" -m wheel pack sk -d trimmed >/dev/null
$PIP install -q --no-deps --no-compile --no-index --target site $PLAT whl2/*.whl whl/sglang-0.5.17-*.whl \
  whl/flashinfer_python-0.6.15.post1-*.whl trimmed/sglang_kernel-0.4.5-*.whl
# unused big files: xgrammar static lib, sglang's Rust gRPC/server/multimodal extensions, flashinfer JIT headers
rm -f site/xgrammar/lib/libxgrammar.a site/sglang/srt/{server,grpc,multimodal}/_core*.so
rm -rf site/flashinfer/data/cutlass site/flashinfer/data/cccl
tar -cf - -C site . | xz -9e -T2 > "$out/site.tar.xz"
ls -l "$out/site.tar.xz"

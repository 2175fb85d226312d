#!/usr/bin/env bash
# On the CPU machine: pack the installed SGLang's pure-Python tree (no compiled extensions, which are built
# for this machine's Python) for the GPU machine, and download the cp312 wheels its kernels import.
set -euo pipefail
cd "$(dirname "$0")/.."
site=$(python3 -c "import sglang, os; print(os.path.dirname(os.path.dirname(sglang.__file__)))")
mkdir -p .device .whl
tar -cf - -C "$site" --exclude='__pycache__' --exclude='*.so' sglang | xz -6 -T2 > .device/sglang_py.tar.xz
P="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64"
P="$P --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any"
python3 -m pip download -q $P -d .whl orjson pybase64 msgspec pyzmq starlette pydantic pydantic-core \
  typing-inspection annotated-types ipython traitlets jedi parso pexpect ptyprocess prompt_toolkit wcwidth pygments \
  decorator matplotlib-inline stack_data executing asttokens pure_eval ipython-pygments-lexers einops fla-core==0.6.0
du -sh .device .whl

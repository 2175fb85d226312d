# Source on the GPU machine (device tool) from the repo root: installs the carried wheels (.whl/) and the
# pure-Python SGLang tree (.device/sglang_py.tar.xz, built by bench/pack_sglang.sh) into /tmp/site.
# Needs carry: [".whl", ".device"].
set -u
if [ ! -f /tmp/site/.ok ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && tar -xJf .device/sglang_py.tar.xz -C /tmp/site && touch /tmp/site/.ok || echo "device_env: install failed"
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 -c "import torch, triton, sglang; print('gpu', torch.cuda.get_device_name(), 'torch', torch.__version__, 'triton', triton.__version__, 'sglang', sglang.__version__)"

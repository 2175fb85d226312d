"""Without a GPU, every Triton kernel (ours and SGLang's) runs under the interpreter in fp32."""

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()

if not HAS_CUDA:
    from sglang_trinv.testing import enable_interpreter

    enable_interpreter()

DEVICE = "cuda" if HAS_CUDA else "cpu"


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)

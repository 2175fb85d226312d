"""Run SGLang's (and our) Triton kernels on a CPU under ``TRITON_INTERPRET=1``.

Three shims make SGLang's FLA kernels interpretable (triton 3.6–3.8):
1. autotuners use only their first config (the interpreter would run every config);
2. ``fla.op.exp`` (an alias of ``tl.exp``) is rebound to a ``@triton.jit`` wrapper, since the interpreter
   cannot call a bare builtin from another jitted function;
3. ``fla.utils.device_torch_lib.device`` returns a null context (there is no CUDA device to switch to).

Call :func:`enable_interpreter` before anything imports Triton kernels (the env var is read when a kernel
is decorated). Test in fp32: bf16 dots in the interpreter are not representative of the GPU.
"""

from __future__ import annotations

import contextlib
import importlib
import os

FLA = "sglang.kernels.ops.attention.fla"
_enabled = False


def enable_interpreter() -> None:
    global _enabled
    if _enabled:
        return
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: its own @jit helpers read it too
    import triton

    # the interpreter looks for triton.language in the jitted function's __globals__ (this module's)
    globals()["tl"] = importlib.import_module("triton.language")

    original_autotune = triton.autotune

    def first_config_autotune(configs, *args, **kwargs):
        return original_autotune(configs[:1], *args, **kwargs)

    triton.autotune = first_config_autotune
    op = importlib.import_module(f"{FLA}.op")

    @triton.jit
    def _exp(x):
        return tl.exp(x)  # noqa: F821 (module global set above)

    op.exp = _exp
    utils = importlib.import_module(f"{FLA}.utils")
    utils.device_torch_lib = type("NullDeviceLib", (), {"device": staticmethod(lambda *_: contextlib.nullcontext())})
    _enabled = True

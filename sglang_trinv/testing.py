"""Run SGLang's (and our) Triton kernels on a CPU under ``TRITON_INTERPRET=1``.

Five shims make SGLang's FLA kernels interpretable (triton 3.6–3.8):
1. autotuners use only their first config (the interpreter would run every config);
2. ``fla.op.exp`` / ``exp2`` / ``log`` / ``log2`` / ``gather`` (aliases of Triton builtins) are rebound to ``@triton.jit``
   wrappers, since the interpreter cannot call a bare builtin from another jitted function;
3. ``fla.utils.device_torch_lib.device`` returns a null context (there is no CUDA device to switch to);
4. ``tl.dot`` of bf16 operands (the interpreter keeps bf16 as raw uint16 bits and multiplies the bit
   patterns) widens them to fp32 first: the KDA kernels round operands to bf16 even for fp32 inputs. The
   result is what a GPU computes (bf16 products are exact in fp32) up to the accumulation order;
5. ``libdevice.exp`` in SGLang's ``kda.py`` (its fused gate cumsum's β sigmoid) is 2.'s ``tl.exp`` wrapper.

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

    @triton.jit
    def _exp2(x):
        return tl.math.exp2(x)  # noqa: F821

    @triton.jit
    def _log(x):
        return tl.log(x)  # noqa: F821

    @triton.jit
    def _log2(x):
        return tl.log2(x)  # noqa: F821

    op.exp, op.exp2, op.log, op.log2 = _exp, _exp2, _log, _log2
    if op.gather is tl.gather:  # noqa: F821

        @triton.jit
        def _gather(src, index, axis):
            return tl.gather(src, index, axis)  # noqa: F821

        op.gather = _gather
    _widen_bf16_dots()
    try:  # KDA's fused gate cumsum takes β's sigmoid through libdevice.exp, which the interpreter cannot run
        kda = importlib.import_module(f"{FLA}.kda")
    except ImportError:
        kda = None
    if kda is not None and hasattr(kda, "libdevice"):
        kda.libdevice = _LibdeviceShim(kda.libdevice, _exp)
    utils = importlib.import_module(f"{FLA}.utils")
    utils.device_torch_lib = type("NullDeviceLib", (), {"device": staticmethod(lambda *_: contextlib.nullcontext())})
    _enabled = True


class _LibdeviceShim:
    """``libdevice`` as a module sees it under the interpreter: ``exp`` is the jitted ``tl.exp`` wrapper (libdevice's
    own has no interpreter form), every other name libdevice's."""

    def __init__(self, libdevice, exp):
        self._libdevice, self.exp = libdevice, exp

    def __getattr__(self, name):
        return getattr(self._libdevice, name)


def _widen_bf16_dots() -> None:
    import numpy as np
    import triton.language as tl_
    from triton.runtime import interpreter

    original = interpreter.InterpreterBuilder.create_dot
    if getattr(original, "_sglang_trinv_widened", False):
        return

    def widen(x):
        if x.dtype.scalar != tl_.bfloat16:
            return x
        data = interpreter._convert_float(x.data, tl_.bfloat16, tl_.float32, None).view(np.float32)
        return interpreter.TensorHandle(data, tl_.float32)

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        return original(self, widen(a), widen(b), d, input_precision, max_num_imprecise_acc)

    create_dot._sglang_trinv_widened = True
    interpreter.InterpreterBuilder.create_dot = create_dot

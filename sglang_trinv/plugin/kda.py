"""KDA chunk prefill hook point (kept stock for now).

SGLang 0.5.x: ``sglang/kernels/ops/attention/fla/kda.py`` does
``from ...fla.chunk_intra import chunk_kda_fwd_intra`` and calls it from its chunk forward (the Triton KDA
prefill, ``srt/layers/attention/linear/kernels/kda_triton.py``). We validate that target when kda.py loads,
so an SGLang that moved it is reported, but we do not replace it until ``sglang_trinv.ops.kda_fwd_intra``
exists and its contract is wired here.
"""

from __future__ import annotations

from ._state import STATE, IncompatibleSGLangError, logger, sglang_version

KDA = "sglang.kernels.ops.attention.fla.kda"
CHUNK_INTRA = "sglang.kernels.ops.attention.fla.chunk_intra"
NAME = "chunk_kda_fwd_intra"


def kernel_available() -> bool:
    try:
        from .. import ops
    except ImportError:
        return False
    return callable(getattr(ops, "kda_fwd_intra", None))


def status() -> str:
    if kernel_available():
        return "stock (sglang_trinv.ops.kda_fwd_intra exists but the plugin does not wire it yet)"
    return "stock (no sglang_trinv.ops.kda_fwd_intra yet)"


def apply(kda_module) -> None:
    """Called once kda.py is imported: check the hook target, say clearly that KDA stays stock."""
    with STATE.lock:
        if "kda_checked" in STATE.patched:
            return
        if not callable(getattr(kda_module, NAME, None)):
            raise IncompatibleSGLangError(
                f"SGLang {sglang_version()}: {KDA} has no {NAME}; sglang-trinv cannot hook KDA prefill"
            )
        STATE.patched.add("kda_checked")
        logger.info("sglang-trinv: KDA chunk prefill stays %s; --linear-attn-inv=%s applies to GDN only",
                    status(), STATE.method)

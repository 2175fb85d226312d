"""KDA (Kimi-Linear) chunk prefill: swap SGLang's ``chunk_kda_fwd_intra`` for ours.

SGLang 0.5.x: ``sglang/kernels/ops/attention/fla/kda.py`` does
``from ...fla.chunk_intra import chunk_kda_fwd_intra`` and calls it from ``chunk_kda_fwd`` (the Triton KDA
prefill, reached through ``srt/layers/attention/linear/kernels/kda_triton.py``), with
``safe_gate=lower_bound is not None`` and ``fuse_diagonal = fuse_recompute = (small grid)``. Our
:func:`sglang_trinv.ops.kda_fwd_intra` takes the same arguments and returns the same tuple, with the
``(I + A)^{-1}`` by the selected method. Decode/target-verify (fused recurrent) and the other KDA prefill
backends (helion, CuTe/PTX, Blackwell) never call it and stay stock. We replace the function object in every
module that holds it (kda.py's global is the one looked up; chunk_intra.py's own so later imports get ours).

Akk not written: ``chunk_kda_fwd`` unpacks ``w, u, _, kg, Aqk, _ = chunk_kda_fwd_intra(...)`` and drops Akk
(SGLang needs it only to feed its separate w/u kernel, which ours fuses). When kda.py's source shows exactly
that (one call, Akk discarded), kda.py's binding skips the Akk store (``[T, H, 64]`` of k's dtype per call);
every other binding keeps the full stock contract.

Routing (``SGLANG_TRINV_KDA``): unset or ``auto`` (default) — KDA prefill with the exact gate goes through our
kernel (measured alone on an H200, T=8192: chunk_kda_fwd_intra 567.5 → 526.0 µs at 32 heads, 152.6 → 139.9 µs
at 8, error ≤ stock; bench/results/2026-11-27-h200-kda-all), while ``safe_gate`` calls (a model config with a
KDA gate lower bound) stay stock, said once in the log: there ours measured 0.58× (stock's safe_gate schedule is
faster than its exact one; ours computes the diagonal Gram tiles in-kernel under safe_gate); ``1`` — ours for
both; ``0`` — KDA stays stock.

State recurrence (since s27): where our kernel serves a call's intra stage, kda.py's own binding of SGLang's
``chunk_gated_delta_rule_fwd_h`` (GDN's stays as it is) launches SGLang's kernel at constants picked per shape
(``gdn_state.tuned_launch(gk=True)``: SGLang's one autotune config swapped for the call; the same bits, the kernel
1.16-1.55x faster on an H200). ``SGLANG_TRINV_STATE_LAUNCH=sglang`` keeps SGLang's launch; SGLang's own launch
variables, when set, stand. Inside SGLang's KDA prefill CUDA graphs (``chunk_offsets`` passed: tables padded to
the token bucket, whose sequence count is not the batch's) the state recurrence keeps SGLang's launch.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import re
import sys
import threading

from ._state import ENV_KDA, STATE, check_signature, logger, rebind, sglang_version, stock_function, warn_not_triton
from .gdn import ENV_STATE_LAUNCH, check_ops as _check_method, precision_label, state_launch_asked

KDA = "sglang.kernels.ops.attention.fla.kda"
CHUNK_INTRA = "sglang.kernels.ops.attention.fla.chunk_intra"
NAME = "chunk_kda_fwd_intra"
STOCK_PARAMS = ("q", "k", "v", "gk", "beta", "scale", "cu_seqlens", "chunk_size", "chunk_indices", "safe_gate",
                "fuse_recompute", "fuse_diagonal")

_warned_fallbacks: set[tuple] = set()
# whether our kernel served this thread's last chunk_kda_fwd_intra call: chunk_kda_fwd's state recurrence (called
# right after it) takes the tuned launch only then, so a call left stock (safe_gate under auto, a fallback) stays
# stock entirely
_SERVED = threading.local()


def kernel_available() -> bool:
    try:
        from .. import ops
    except ImportError:
        return False
    return all(callable(getattr(ops, name, None)) for name in ("kda_fwd_intra", "kda_supports"))


def mode() -> str:
    """``auto`` (default: ours for the exact gate, stock for safe_gate), ``1`` (ours for both) or ``0`` (stock)."""
    m = os.environ.get(ENV_KDA, "").strip().lower() or "auto"
    return {"on": "1", "true": "1", "off": "0", "false": "0"}.get(m, m)


def status() -> str:
    """How KDA prefill is served when a method is selected (for the start-up line)."""
    if not kernel_available():
        return "stays stock (no sglang_trinv.ops.kda_fwd_intra)"
    m = mode()
    if m == "0":
        return f"stays stock ({ENV_KDA}=0)"
    if m == "1":
        return f"uses it too (Triton chunk_kda_fwd_intra, safe_gate included: {ENV_KDA}=1)"
    return (f"uses it too for the exact gate (Triton chunk_kda_fwd_intra); safe_gate calls stay stock (faster there: "
            f"ours measured 0.58x; {ENV_KDA}=1 to use it there too, {ENV_KDA}=0 to keep KDA stock)")


def _note_fallback(reason: str, k, v, chunk_size: int) -> None:
    key = (reason, tuple(k.shape[2:]), v.shape[-1], k.dtype, chunk_size)
    if key not in _warned_fallbacks:  # once per shape/dtype, not once per layer and batch
        _warned_fallbacks.add(key)
        logger.warning(
            "sglang-trinv: KDA prefill falls back to SGLang's stock kernel for k%s v%s %s chunk_size=%d: %s "
            "(logged once per shape)",
            tuple(k.shape), tuple(v.shape), str(k.dtype).replace("torch.", ""), chunk_size, reason,
        )


DROPS_AKK_CALL = f"w, u, _, kg, Aqk, _ = {NAME}("


def caller_drops_akk(kda_module) -> str | None:
    """None if kda.py's only use of chunk_kda_fwd_intra discards Akk (checked in its source), else why not."""
    try:
        src = inspect.getsource(kda_module)
    except (OSError, TypeError) as e:
        return f"no source for {KDA} ({e})"
    calls = re.findall(rf"\b{NAME}\(", src)
    if len(calls) != 1 or DROPS_AKK_CALL not in src:
        return f"{KDA} calls {NAME} {len(calls)}× / not as '{DROPS_AKK_CALL}...)'"
    return None


def make_wrapper(stock, skip_akk: bool = False, safe_gate_ours: bool = False):
    """Our chunk_kda_fwd_intra. skip_akk: only for a caller that discards Akk (returned as None, not stored);
    safe_gate_ours: route safe_gate calls through our kernel too (else they stay stock, logged once)."""
    from .. import ops

    @functools.wraps(stock)
    def chunk_kda_fwd_intra(q, k, v, gk=None, beta=None, scale=None, cu_seqlens=None, chunk_size=64,
                            chunk_indices=None, safe_gate=False, fuse_recompute=False, fuse_diagonal=False):
        method, precision = STATE.method, STATE.precision
        reason = ops.kda_supports(q, k, v, gk, beta, chunk_size)
        if reason is None and safe_gate and not safe_gate_ours:
            if not STATE.counts["kda_safe_gate_stock"]:
                logger.info("sglang-trinv: KDA safe_gate prefill stays stock (SGLang's safe_gate kernels are faster "
                            "there: ours measured 0.58x on an H200; %s=1 to use %s there too)", ENV_KDA, method)
            STATE.counts["kda_safe_gate_stock"] += 1
            _SERVED.ours = False
            return stock(q, k, v, gk=gk, beta=beta, scale=scale, cu_seqlens=cu_seqlens, chunk_size=chunk_size,
                         chunk_indices=chunk_indices, safe_gate=safe_gate, fuse_recompute=fuse_recompute,
                         fuse_diagonal=fuse_diagonal)
        if reason is None:
            if not STATE.counts["kda"]:  # operators can see in the log that our kernel really serves prefill
                logger.info("sglang-trinv: first KDA chunk prefill served by %s (precision %s), k%s v%s %s",
                            method, precision_label(method, precision, kda=True), tuple(k.shape), tuple(v.shape),
                            str(k.dtype).replace("torch.", ""))
            STATE.counts["kda"] += 1
            _SERVED.ours = True
            return ops.kda_fwd_intra(q, k, v, gk, beta, scale=scale, cu_seqlens=cu_seqlens, chunk_size=chunk_size,
                                     chunk_indices=chunk_indices, safe_gate=safe_gate,
                                     fuse_recompute=fuse_recompute or skip_akk, fuse_diagonal=fuse_diagonal,
                                     method=method, precision=precision)
        STATE.counts["kda_fallback"] += 1
        _SERVED.ours = False
        _note_fallback(reason, k, v, chunk_size)
        return stock(q, k, v, gk=gk, beta=beta, scale=scale, cu_seqlens=cu_seqlens, chunk_size=chunk_size,
                     chunk_indices=chunk_indices, safe_gate=safe_gate, fuse_recompute=fuse_recompute,
                     fuse_diagonal=fuse_diagonal)

    chunk_kda_fwd_intra.__sglang_trinv__ = True
    return chunk_kda_fwd_intra


FWD_H = "chunk_gated_delta_rule_fwd_h"  # chunk_kda_fwd's state recurrence (SGLang's chunk_delta_h.py), gk given
FWD_H_NEEDS = ("k", "w", "u", "gk", "cu_seqlens")


def state_launch_reason(kda_module) -> str | None:
    """None if chunk_kda_fwd's state recurrence can run at the tuned launch constants (the default), else why it
    keeps SGLang's: ``SGLANG_TRINV_STATE_LAUNCH=sglang``, or SGLang's kernel / launcher not as measured."""
    from ..ops import gdn_state

    asked = state_launch_asked()
    if asked != "tuned":
        return f"{ENV_STATE_LAUNCH}={asked}" + ("" if asked == "sglang" else " (not 'tuned' or 'sglang')")
    fwd_h = getattr(kda_module, FWD_H, None)
    chunk_h = sys.modules.get(f"{gdn_state.FLA}.chunk_delta_h")
    if fwd_h is None or chunk_h is None or fwd_h is not getattr(chunk_h, FWD_H, None):
        return f"{KDA}.{FWD_H} is not SGLang's chunk_delta_h.{FWD_H}"
    missing = [p for p in FWD_H_NEEDS if p not in inspect.signature(fwd_h).parameters]
    if missing:
        return f"{FWD_H} has no parameter(s) {missing}"
    return gdn_state.stock_kernel_reason()


def state_launch_label() -> str:
    """The start-up log's / ``sglang-trinv check``'s words for the tuned KDA state launch."""
    from ..ops import gdn_state

    set_ = gdn_state.sglang_launch_set()
    return "SGLang's own kernel at launch constants " + (f"SGLang's ({', '.join(set_)} set)" if set_ else
                                                         "picked per shape (BV 16, 32 or 64)")


def make_fwd_h_wrapper(stock_fwd_h):
    """chunk_kda_fwd's ``chunk_gated_delta_rule_fwd_h``: SGLang's, its kernel at gdn_state.tuned_launch(gk=True)'s
    constants (bit for bit its values) where our kernel served the intra stage just before (``_SERVED``); SGLang's
    launch where it did not, or where SGLang's launch variables are set."""
    from ..ops import gdn_state

    sig = inspect.signature(stock_fwd_h)

    @functools.wraps(stock_fwd_h)
    def chunk_gated_delta_rule_fwd_h(*args, **kwargs):
        ours, _SERVED.ours = getattr(_SERVED, "ours", False), False
        if not ours:  # (stock's call: no argument binding on its path)
            return stock_fwd_h(*args, **kwargs)
        # (chunk_kda_fwd passes keywords only: no binding, ~5-10 µs of host time per layer)
        a = sig.bind_partial(*args, **kwargs).arguments if args else kwargs
        k, u, gk, cu = a.get("k"), a.get("u"), a.get("gk"), a.get("cu_seqlens")
        if gk is None or u is None or k is None or gdn_state.sglang_launch_set():
            return stock_fwd_h(*args, **kwargs)
        if a.get("chunk_offsets") is not None:
            # SGLang's KDA prefill CUDA graph (kda_prefill_graph.py, the only caller that passes chunk_offsets): its
            # tables are padded to the bucket, so len(cu) - 1 and the tokens are the bucket's bounds (128 sequences),
            # not the batch's, and the rule would pick for many short sequences. H200, s30: one 8192-token sequence
            # at H=8 took 281.3 µs at the rule's launch against 254.5 at SGLang's
            if not STATE.counts["kda_state_graph"]:
                logger.info("sglang-trinv: KDA state recurrence in a prefill CUDA graph (tables padded to the "
                            "bucket): SGLang's own launch")
            STATE.counts["kda_state_graph"] += 1
            return stock_fwd_h(*args, **kwargs)
        n_seqs = k.shape[0] if cu is None else len(cu) - 1
        launch = gdn_state.tuned_launch(n_seqs, u.shape[-2], u.shape[-1], u.device, gk=True,
                                        tokens=k.shape[0] * k.shape[1])
        if not STATE.counts["kda_state_tuned"]:
            logger.info("sglang-trinv: first KDA state recurrence at BV=%d, %d warps, %d stages (SGLang's kernel; "
                        "%s=sglang keeps its own launch)", *launch, ENV_STATE_LAUNCH)
        STATE.counts["kda_state_tuned"] += 1
        return gdn_state.sglang_fwd_h(stock_fwd_h, launch, **a)

    chunk_gated_delta_rule_fwd_h.__sglang_trinv__ = True
    return chunk_gated_delta_rule_fwd_h


def apply_state_launch(kda_module) -> None:
    """chunk_kda_fwd's state recurrence at the tuned launch (kda.py's own binding only: GDN's stays as it is)."""
    reason = state_launch_reason(kda_module)
    if reason:
        logger.info("sglang-trinv: KDA state recurrence: SGLang's own kernel and launch (%s)", reason)
        return
    stock_fwd_h = getattr(kda_module, FWD_H)
    setattr(kda_module, FWD_H, make_fwd_h_wrapper(stock_fwd_h))
    STATE.bindings.append((kda_module, FWD_H, stock_fwd_h))  # restored by unpatch with the rest
    logger.info("sglang-trinv: KDA state recurrence: %s", state_launch_label())


def apply(kda_module) -> None:
    """Patch KDA prefill; called with kda.py once it is imported. Raises on an incompatible SGLang."""
    with STATE.lock:
        if "kda" in STATE.patched or "kda_stock" in STATE.patched:
            return
        stock = stock_function(kda_module, KDA, NAME, "KDA")
        routing = mode()
        if routing not in ("auto", "1", "0"):
            STATE.patched.add("kda_stock")
            logger.warning("sglang-trinv: %s=%r is not auto, 1 or 0: KDA chunk prefill stays stock", ENV_KDA,
                           os.environ.get(ENV_KDA))
            return
        if not kernel_available() or routing == "0":
            STATE.patched.add("kda_stock")
            logger.info("sglang-trinv: KDA chunk prefill %s; --linear-attn-inv=%s applies to GDN only",
                        status(), STATE.method)
            return
        _check_method(STATE.method, STATE.precision, kda=True)
        chunk_intra = importlib.import_module(CHUNK_INTRA)
        if stock is not getattr(chunk_intra, NAME, None):
            STATE.patched.add("kda_stock")
            warn_not_triton(KDA, NAME, stock, CHUNK_INTRA, "KDA")
            return
        check_signature(stock, STOCK_PARAMS, f"{CHUNK_INTRA}.{NAME}")
        ours = make_wrapper(stock, safe_gate_ours=routing == "1")
        n = rebind(stock, ours)
        why_not = caller_drops_akk(kda_module)
        if why_not is None and getattr(kda_module, NAME) is ours:  # restored by unpatch with the rest
            setattr(kda_module, NAME, make_wrapper(stock, skip_akk=True, safe_gate_ours=routing == "1"))
        STATE.patched.add("kda")
        apply_state_launch(kda_module)
        logger.info(
            "sglang-trinv: KDA chunk prefill (I+A)^-1 -> %s (precision %s) on SGLang %s [%d bindings of %s; "
            "chunk_kda_fwd: %s; %s]", STATE.method, precision_label(STATE.method, STATE.precision, kda=True),
            sglang_version(),
            n, NAME, "Akk not written (SGLang drops it)" if why_not is None else f"Akk written ({why_not})",
            "safe_gate too" if routing == "1" else f"safe_gate stays stock, {ENV_KDA}=1 to include it",
        )

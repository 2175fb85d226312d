"""GDN chunk prefill: swap SGLang's fused ``kkt + solve_tril + recompute_w_u`` for ours.

SGLang 0.5.x: ``sglang/kernels/ops/attention/fla/chunk.py`` does
``from ...fla.chunk_fwd import chunk_gated_delta_rule_fwd_intra`` and calls it from
``chunk_gated_delta_rule_fwd`` (the Triton prefill/extend path, reached through
``srt/layers/attention/linear/kernels/gdn_triton.py::TritonGDNKernel.extend``). Decode and target-verify
use the fused recurrent kernels and never reach it, so they stay stock. We replace the function object in
every module that holds it (chunk.py's global is the one that is looked up; chunk_fwd.py's own global so
later ``from`` imports get ours).

Pipeline fusion (default; ``SGLANG_TRINV_FUSE_PIPELINE=0`` turns it off): chunk.py's
``chunk_gated_delta_rule_fwd`` is ``g = chunk_local_cumsum(g)`` → intra → ``chunk_gated_delta_rule_fwd_h`` →
``chunk_fwd_o``, and its only caller (``ChunkGatedDeltaRuleFunction.forward``) drops the returned A. We replace
it by the same pipeline with the cumsum done inside our intra kernel and A not written
(:func:`sglang_trinv.ops.gdn_cumsum_fwd_intra`), then SGLang's ``fwd_h`` / ``fwd_o`` (by default from
``ops.gdn_state``'s copies, the state kernel at launch constants tuned per shape: :func:`state_stage`). Installed only
after checking, from the source, that the stock function still has exactly that shape and that the caller
still ignores A (else A is written); otherwise only the intra kernel is swapped, with a log line.

Output without the memset (default with the fused pipeline; ``SGLANG_TRINV_O_MEMSET=1`` keeps stock's
``chunk_fwd_o``): SGLang's ``chunk_fwd_o`` zero-fills o before a kernel that writes every row of every chunk;
:func:`sglang_trinv.ops.gdn_fwd_o` launches the same kernel with the same parameters into an empty o and zeroes
only rows past the last sequence on the device (bitwise stock's output; ~21 µs of GPU time at T=8192 H=32 on an
H200). Used only where :func:`fwd_o_check` finds stock's ``chunk_fwd_o`` as mirrored. Not part of the
inversion: benchmarks report it apart.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
import re
import sys
from pathlib import Path

from ._state import (ENV_FUSE_PIPELINE, STATE, IncompatibleSGLangError, check_signature, logger, rebind,
                     sglang_version, stock_function, unwrap, warn_not_triton)

CHUNK = "sglang.kernels.ops.attention.fla.chunk"
CHUNK_FWD = "sglang.kernels.ops.attention.fla.chunk_fwd"
NAME = "chunk_gated_delta_rule_fwd_intra"
STOCK_PARAMS = ("k", "v", "g", "beta", "cu_seqlens", "chunk_size", "chunk_indices")
FWD_NAME = "chunk_gated_delta_rule_fwd"
FWD_PARAMS = ("q", "k", "v", "g", "beta", "scale", "initial_state", "initial_state_indices", "cu_seqlens",
              "chunk_indices")
FWD_EXTRA_PARAMS = {"inplace_update"}  # 0.5.19+: passed through to chunk_gated_delta_rule_fwd_h
FWD_STAGES = ("chunk_local_cumsum", NAME, "chunk_gated_delta_rule_fwd_h", "chunk_fwd_o")
ENV_O_MEMSET = "SGLANG_TRINV_O_MEMSET"  # "1": keep stock's chunk_fwd_o (o zero-filled) in the fused pipeline
ENV_OVERLAP_O = "SGLANG_TRINV_OVERLAP_O"  # "1": the output stage beside the state recurrence (measured slower)
ENV_STATE_LAUNCH = "SGLANG_TRINV_STATE_LAUNCH"  # "tuned" (default) or "sglang": the state kernel's launch (GDN, KDA)

_warned_fallbacks: set[tuple] = set()


def static_check() -> None:
    """Check the hook target exists without importing the kernels (cheap, for the CLI process)."""
    for module, needle in ((CHUNK, f"import {NAME}"), (CHUNK_FWD, f"def {NAME}(")):
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin or not Path(spec.origin).is_file():
            raise IncompatibleSGLangError(
                f"sglang-trinv needs {module} (SGLang {sglang_version()} has no such module); "
                "this SGLang is not supported: use --linear-attn-inv stock or an SGLang 0.5.17-0.5.x release"
            )
        if needle not in Path(spec.origin).read_text():
            raise IncompatibleSGLangError(
                f"sglang-trinv hooks {module}.{NAME}, which SGLang {sglang_version()} does not have "
                f"(no {needle!r} in {spec.origin}); this SGLang is not supported: use --linear-attn-inv stock"
            )


def check_ops(method: str | None = None, precision: str | None = None, kda: bool = False) -> None:
    """Our kernels must expose the contract the wrapper calls, and implement the selected method/precision
    (``kda``: for the KDA kernel, which has one merge precision)."""
    try:
        from .. import ops
    except ImportError as e:
        raise ImportError(f"sglang-trinv: cannot import sglang_trinv.ops ({e}); the GDN kernels are missing") from e
    missing = [name for name in ("gdn_fwd_intra", "supports") if not callable(getattr(ops, name, None))]
    if missing:
        raise ImportError(f"sglang-trinv: sglang_trinv.ops lacks {', '.join(missing)}; the GDN kernels are missing")
    if method is None:
        return
    kernels = getattr(ops, "KERNEL_METHODS", None)
    if kernels is not None and method not in kernels:
        raise ValueError(f"--linear-attn-inv={method} has no Triton kernel; kernels exist for {', '.join(kernels)}")
    if hasattr(ops, "split_precision"):  # fail at start-up, not in the first prefill
        _, merge = ops.split_precision(method, precision)
        m16, m32 = ops.merge_levels(merge)
        if kda and precision and m16 != m32:  # (None: the KDA kernel's own default)
            raise ValueError(f"--linear-attn-inv-precision={precision}: per-level merge precision (M16+M32) is for "
                             "the GDN kernels; the KDA kernel takes one merge precision (e.g. bf16x3)")


def precision_label(method: str, precision: str | None, kda: bool = False) -> str:
    if precision:
        return precision
    ops = sys.modules.get("sglang_trinv.ops")  # not imported just for a log line (tokenizer processes)
    table = "KDA_DEFAULT_PRECISION" if kda else "DEFAULT_PRECISION"
    default = getattr(ops, table, {}).get(method) if ops is not None else None
    return f"{default} (kernel default)" if default else "kernel default"


def _note_fallback(reason: str, k, v, beta, chunk_size: int) -> None:
    key = (reason, tuple(k.shape[2:]), v.shape[-1], beta.shape[-1] if beta is not None else None, k.dtype, chunk_size)
    if key not in _warned_fallbacks:  # once per shape/dtype, not once per layer and batch
        _warned_fallbacks.add(key)
        logger.warning(
            "sglang-trinv: GDN prefill falls back to SGLang's stock kernel for k%s v%s %s chunk_size=%d: %s "
            "(logged once per shape)",
            tuple(k.shape), tuple(v.shape), str(k.dtype).replace("torch.", ""), chunk_size, reason,
        )


def make_wrapper(stock):
    from .. import ops

    @functools.wraps(stock)
    def chunk_gated_delta_rule_fwd_intra(k, v, g=None, beta=None, cu_seqlens=None, chunk_size=64,
                                         chunk_indices=None):
        method, precision = STATE.method, STATE.precision
        reason = ops.supports(k, v, g, beta, chunk_size)
        if reason is None:
            if not STATE.counts["gdn"]:  # operators can see in the log that our kernel really serves prefill
                logger.info("sglang-trinv: first GDN chunk prefill served by %s (precision %s), k%s v%s %s",
                            method, precision_label(method, precision), tuple(k.shape), tuple(v.shape),
                            str(k.dtype).replace("torch.", ""))
            STATE.counts["gdn"] += 1
            return ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu_seqlens, chunk_indices=chunk_indices,
                                     method=method, precision=precision)
        STATE.counts["gdn_fallback"] += 1
        _note_fallback(reason, k, v, beta, chunk_size)
        return stock(k, v, g=g, beta=beta, cu_seqlens=cu_seqlens, chunk_size=chunk_size, chunk_indices=chunk_indices)

    chunk_gated_delta_rule_fwd_intra.__sglang_trinv__ = True
    return chunk_gated_delta_rule_fwd_intra


def apply(chunk_module) -> None:
    """Patch GDN prefill; called with chunk.py once it is imported. Raises on an incompatible SGLang."""
    with STATE.lock:
        if "gdn" in STATE.patched:
            return
        check_ops(STATE.method, STATE.precision)
        stock = stock_function(chunk_module, CHUNK, NAME, "GDN")
        chunk_fwd = importlib.import_module(CHUNK_FWD)
        if stock is not getattr(chunk_fwd, NAME, None):
            # Intel XPU: chunk.py rebinds the name to sglang.srt.hardware_backend.xpu's kernel
            warn_not_triton(CHUNK, NAME, stock, CHUNK_FWD, "GDN")
            return
        check_signature(stock, STOCK_PARAMS, f"{CHUNK_FWD}.{NAME}")
        n = rebind(stock, make_wrapper(stock))
        STATE.patched.add("gdn")
        logger.info(
            "sglang-trinv: GDN chunk prefill (I+A)^-1 -> %s (precision %s) on SGLang %s [%d bindings of %s]",
            STATE.method, precision_label(STATE.method, STATE.precision), sglang_version(), n, NAME,
        )
    apply_pipeline(chunk_module)


# ------------------------------------------------------------------------------------------ pipeline fusion
def pipeline_check(chunk_module) -> tuple[str | None, bool]:
    """(reason the pipeline cannot be fused or None, whether A must still be written), from the source."""
    fwd = getattr(chunk_module, FWD_NAME, None)
    if fwd is None:
        return f"{CHUNK} has no {FWD_NAME}", True
    fwd = unwrap(fwd)
    params = tuple(inspect.signature(fwd).parameters)
    if params[:len(FWD_PARAMS)] != FWD_PARAMS or not set(params[len(FWD_PARAMS):]) <= FWD_EXTRA_PARAMS:
        return f"{FWD_NAME}{params} is not the signature mirrored {FWD_PARAMS} (+ {sorted(FWD_EXTRA_PARAMS)})", True
    try:
        src = inspect.getsource(fwd)
    except (OSError, TypeError) as e:
        return f"no source for {FWD_NAME} ({e})", True
    called = [name for name in re.findall(r"\b(\w+)\(", src) if name in FWD_STAGES]
    if tuple(called) != FWD_STAGES:
        return f"{FWD_NAME} calls {called}, not the stages {list(FWD_STAGES)}", True
    for stage in FWD_STAGES[2:]:
        if not callable(getattr(chunk_module, stage, None)):
            return f"{CHUNK} has no {stage}", True
    # A is unused by the caller iff the only 'A' token in forward() is the unpacking of our return value
    store_A = True
    caller = getattr(chunk_module, "ChunkGatedDeltaRuleFunction", None)
    try:
        caller_src = inspect.getsource(caller.forward)
        store_A = len(re.findall(r"\bA\b", caller_src)) != 1 or f"A, w, h, v_new = {FWD_NAME}(" not in caller_src
    except (AttributeError, OSError, TypeError):
        pass
    return None, store_A


def fwd_o_check(chunk_module) -> str | None:
    """None if ``chunk_module.chunk_fwd_o`` is SGLang's as :func:`sglang_trinv.ops.gdn_fwd_o` mirrors it (the
    same kernel launched the same way into a zero-filled o), else why not."""
    from ..ops import gdn_output

    fn = getattr(chunk_module, "chunk_fwd_o", None)
    if fn is None:
        return f"{CHUNK} has no chunk_fwd_o"
    fn = unwrap(fn)
    if getattr(fn, "__module__", None) != gdn_output.CHUNK_O:
        return f"chunk_fwd_o comes from {getattr(fn, '__module__', None)}, not {gdn_output.CHUNK_O}"
    try:
        kernel = importlib.import_module(gdn_output.CHUNK_O).chunk_fwd_kernel_o
        src = re.sub(r"\s+", "", inspect.getsource(fn))
    except (ImportError, AttributeError, OSError, TypeError) as e:
        return f"chunk_fwd_o not inspectable ({type(e).__name__}: {e})"
    if tuple(getattr(kernel, "arg_names", ())) != gdn_output.KERNEL_PARAMS:
        return f"chunk_fwd_kernel_o{tuple(getattr(kernel, 'arg_names', ()))} is not the mirrored signature"
    missing = [x for x in gdn_output.SOURCE if x not in src]
    return f"chunk_fwd_o differs from the mirrored source (no {missing[0]!r})" if missing else None


def output_stage_reason(chunk_module) -> str | None:
    """None if the fused pipeline writes o without the memset (ops.gdn_fwd_o), else why stock's chunk_fwd_o stays
    (``SGLANG_TRINV_O_MEMSET=1`` or :func:`fwd_o_check`'s reason): one decision for the start-up log and
    ``sglang-trinv check``."""
    if os.environ.get(ENV_O_MEMSET, "0").strip() == "1":
        return f"{ENV_O_MEMSET}=1"
    return fwd_o_check(chunk_module)


def overlap_asked() -> bool:
    """``SGLANG_TRINV_OVERLAP_O=1``: the state recurrence and output stage at once, where state_stage allows."""
    return os.environ.get(ENV_OVERLAP_O, "0").strip() == "1"


def state_launch_asked() -> str:
    """``SGLANG_TRINV_STATE_LAUNCH``, lower-cased: "tuned" (the default, also when empty) or "sglang" (anything
    else is refused by the callers with a log line)."""
    return os.environ.get(ENV_STATE_LAUNCH, "tuned").strip().lower() or "tuned"


def state_stage(chunk_module, o_memset: bool) -> tuple[str, str | None]:
    """How the fused pipeline runs SGLang's state recurrence and output stage, and why not as asked (or None):
    - "tuned" (the default): ops.gdn_state's copies of both kernels, the state kernel at launch constants picked
      per shape (gdn_state.tuned_launch; bit for bit SGLang's values, measured faster at every shape);
    - "overlap" (``SGLANG_TRINV_OVERLAP_O=1``, experimental, measured slower): the same copies side by side;
    - "sglang" (``SGLANG_TRINV_STATE_LAUNCH=sglang``, or where the copies cannot run): SGLang's own state kernel,
      then the output stage."""
    asked = "overlap" if overlap_asked() else state_launch_asked()
    if asked not in ("overlap", "tuned", "sglang"):
        return "sglang", f"{ENV_STATE_LAUNCH}={asked!r} is not 'tuned' or 'sglang'"
    if asked == "sglang":
        return "sglang", None
    if o_memset:
        return "sglang", "the output stage is stock's chunk_fwd_o (with the memset)"
    from ..ops import gdn_state

    reason = gdn_state.stock_reason()
    return ("sglang", reason) if reason else (asked, None)


def state_stage_label(stage: str) -> str:
    """The start-up log's / ``sglang-trinv check``'s words for a state_stage mode."""
    from ..ops import gdn_state

    set_ = gdn_state.sglang_launch_set()
    return {"tuned": "SGLang's kernels (copies), the state kernel's launch constants " +
                     (f"SGLang's ({', '.join(set_)} set)" if set_ else "picked per shape (BV 16, 32 or 64)"),
            "overlap": f"state recurrence and output stage side by side ({ENV_OVERLAP_O}=1, experimental, measured "
                       "slower)",
            "sglang": "SGLang's own state kernel, then the output stage"}[stage]


def make_fwd_wrapper(stock_fwd, chunk_module, store_A: bool, o_memset: bool = True, stage: str = "sglang"):
    """The fused pipeline; ``o_memset=False``: the output stage through ops.gdn_fwd_o (no memset of o);
    ``stage``: how the state recurrence and the output stage run (:func:`state_stage`)."""
    from .. import ops

    @functools.wraps(stock_fwd)
    def chunk_gated_delta_rule_fwd(q, k, v, g, beta, scale, initial_state, initial_state_indices, cu_seqlens=None,
                                   chunk_indices=None, **kwargs):
        if g is None or ops.supports(k, v, g, beta) is not None:
            # stock pipeline; its intra call reaches our intra wrapper, which logs the fallback reason
            return stock_fwd(q, k, v, g, beta, scale, initial_state, initial_state_indices, cu_seqlens=cu_seqlens,
                             chunk_indices=chunk_indices, **kwargs)
        method, precision = STATE.method, STATE.precision
        if not STATE.counts["gdn"]:
            logger.info("sglang-trinv: first GDN chunk prefill served by %s (precision %s), k%s v%s %s "
                        "[fused pipeline: cumsum in-kernel, A %s]", method, precision_label(method, precision),
                        tuple(k.shape), tuple(v.shape), str(k.dtype).replace("torch.", ""),
                        "written" if store_A else "not written")
        STATE.counts["gdn"] += 1
        STATE.counts["gdn_pipeline"] += 1
        g, w, u, A = ops.gdn_cumsum_fwd_intra(k, v, g, beta, cu_seqlens=cu_seqlens, chunk_indices=chunk_indices,
                                              method=method, precision=precision, store_A=store_A)
        copies_here = stage != "sglang" and set(kwargs) <= FWD_EXTRA_PARAMS and initial_state is not None \
            and initial_state_indices is not None
        if stage != "sglang" and not copies_here and ("state_stage",) not in _warned_fallbacks:
            _warned_fallbacks.add(("state_stage",))
            logger.info("sglang-trinv: a call without an initial state or with arguments %s runs SGLang's own "
                        "state and output stages (not %s)", sorted(kwargs), state_stage_label(stage))
        if copies_here:
            from ..ops import gdn_state

            STATE.counts["gdn_overlap" if stage == "overlap" else "gdn_state_tuned"] += 1
            h, v_new, o = gdn_state.gdn_fwd_h_o(q, k, w, u, g, scale, initial_state, initial_state_indices,
                                                cu_seqlens=cu_seqlens, chunk_indices=chunk_indices,
                                                inplace_update=kwargs.get("inplace_update", True),
                                                overlap=stage == "overlap", launch="tuned")
            if getattr(chunk_module, "SUPPRESS_LEVEL", 0) < 3:
                return g, o, A, None, h, None
            return g, o, A, w, h, v_new
        h, v_new = chunk_module.chunk_gated_delta_rule_fwd_h(
            k=k, w=w, u=u, g=g, initial_state=initial_state, initial_state_indices=initial_state_indices,
            cu_seqlens=cu_seqlens, chunk_indices=chunk_indices, **kwargs)
        if o_memset:
            o = chunk_module.chunk_fwd_o(q=q, k=k, v=v_new, h=h, g=g, scale=scale, cu_seqlens=cu_seqlens)
        else:
            o = ops.gdn_fwd_o(q, k, v_new, h, g, scale, cu_seqlens=cu_seqlens, chunk_indices=chunk_indices)
        if getattr(chunk_module, "SUPPRESS_LEVEL", 0) < 3:
            return g, o, A, None, h, None
        return g, o, A, w, h, v_new

    chunk_gated_delta_rule_fwd.__sglang_trinv__ = True
    return chunk_gated_delta_rule_fwd


def apply_pipeline(chunk_module) -> None:
    """Fuse the cumsum into our kernel and skip A where SGLang drops it (after apply(); see module doc)."""
    with STATE.lock:
        if "gdn_pipeline" in STATE.patched or "gdn" not in STATE.patched:
            return
        if os.environ.get(ENV_FUSE_PIPELINE, "1").strip() == "0":
            logger.info("sglang-trinv: %s=0: only the intra kernel is swapped", ENV_FUSE_PIPELINE)
            return
        reason, store_A = pipeline_check(chunk_module)
        if reason:
            logger.info("sglang-trinv: GDN pipeline not fused (%s); only the intra kernel is swapped", reason)
            return
        o_reason = output_stage_reason(chunk_module)
        stock = getattr(chunk_module, FWD_NAME)
        stage, st_reason = state_stage(chunk_module, o_memset=o_reason is not None)
        if st_reason:
            logger.info("sglang-trinv: %s ignored: %s", f"{ENV_OVERLAP_O}=1" if overlap_asked() else
                        "the tuned state launch", st_reason)
        logger.info("sglang-trinv: GDN state recurrence and output stage: %s", state_stage_label(stage))
        n = rebind(stock, make_fwd_wrapper(stock, chunk_module, store_A, o_memset=o_reason is not None,
                                           stage=stage))
        STATE.patched.add("gdn_pipeline")
        logger.info("sglang-trinv: GDN %s fused: gate cumsum in our kernel, A %s, output %s [%d bindings]",
                    FWD_NAME, "written (a caller may read it)" if store_A else "not written (SGLang drops it)",
                    f"by stock chunk_fwd_o ({o_reason})" if o_reason else "without the memset of o" +
                    (" (ops.gdn_fwd_o)" if stage == "sglang" else ""),
                    n)

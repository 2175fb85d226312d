"""Per-process plugin state: the selected method, call counters and every binding we replaced."""

from __future__ import annotations

import logging
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from types import ModuleType

logger = logging.getLogger("sglang_trinv.plugin")

STOCK = "stock"
ENV_METHOD = "SGLANG_LINEAR_ATTN_INV"
ENV_PRECISION = "SGLANG_LINEAR_ATTN_INV_PRECISION"
# "0": swap only the intra kernel, leave SGLang's chunk_gated_delta_rule_fwd (cumsum, A written) as it is
ENV_FUSE_PIPELINE = "SGLANG_TRINV_FUSE_PIPELINE"
# KDA (Kimi-Linear) prefill routing: "auto" (default: ours for the exact gate, stock for safe_gate), "1" (ours
# for both), "0" (stock); see plugin/kda.py
ENV_KDA = "SGLANG_TRINV_KDA"


class IncompatibleSGLangError(RuntimeError):
    """The installed SGLang lacks a function the plugin hooks (or it changed shape)."""


def sglang_version() -> str:
    try:
        import sglang

        return getattr(sglang, "__version__", "unknown")
    except Exception:  # noqa: BLE001 (only used in messages)
        return "unknown"


@dataclass
class State:
    method: str = STOCK
    precision: str | None = None
    # "gdn": calls served by our kernel, "gdn_fallback": calls sent back to stock (unsupported input)
    counts: Counter = field(default_factory=Counter)
    # (module, attribute, original) for every module global we replaced, so unpatch() can restore it
    bindings: list[tuple[ModuleType, str, object]] = field(default_factory=list)
    # what has been patched in this process: "gdn", "gdn_prefill_default", ...
    patched: set[str] = field(default_factory=set)
    # an error from register() (bad env var, incompatible SGLang): re-raised where SGLang cannot swallow it
    error: BaseException | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)


STATE = State()


def unwrap(fn):
    """SGLang's own function behind one of our wrappers (``functools.wraps`` keeps it in ``__wrapped__``)."""
    return getattr(fn, "__wrapped__", fn) if getattr(fn, "__sglang_trinv__", False) else fn


def stock_function(module, module_name: str, name: str, what: str):
    """SGLang's ``module_name.name`` (unwrapping ours); refuses an SGLang without it."""
    current = getattr(module, name, None)
    if not callable(current):
        raise IncompatibleSGLangError(
            f"SGLang {sglang_version()}: {module_name} has no {name}; sglang-trinv cannot hook {what} prefill"
        )
    return unwrap(current)


def check_signature(fn, expected: tuple[str, ...], where: str) -> None:
    """Our wrapper mirrors ``expected``: refuse to patch a function whose parameters differ."""
    import inspect

    params = tuple(inspect.signature(fn).parameters)
    if params != expected:
        raise IncompatibleSGLangError(
            f"SGLang {sglang_version()}: {where}{params} does not have the signature sglang-trinv "
            f"mirrors {expected}; refusing to patch"
        )


def warn_not_triton(module_name: str, name: str, found, origin: str, what: str) -> None:
    """The name is bound to another platform's kernel (e.g. Intel XPU): that prefill stays stock, said once."""
    logger.warning(
        "sglang-trinv: %s.%s is %s.%s, not the Triton kernel from %s; %s prefill stays stock on this platform "
        "(--linear-attn-inv=%s has no effect on it)",
        module_name, name, getattr(found, "__module__", "?"), getattr(found, "__qualname__", "?"), origin, what,
        STATE.method,
    )


def rebind(original: object, replacement: object) -> int:
    """Replace every module-global binding of ``original`` (``from X import f`` copies) by ``replacement``.

    Returns how many bindings were replaced. Each is recorded so :func:`restore_bindings` can undo it.
    """
    replaced = 0
    for module in list(sys.modules.values()):
        if not isinstance(module, ModuleType):
            continue
        try:
            namespace = vars(module)
        except TypeError:
            continue
        for name, value in list(namespace.items()):
            if value is original:
                try:
                    setattr(module, name, replacement)
                except (AttributeError, TypeError):
                    continue
                STATE.bindings.append((module, name, original))
                replaced += 1
    return replaced


def restore_bindings() -> int:
    restored = 0
    for module, name, original in reversed(STATE.bindings):
        current = getattr(module, name, None)
        if getattr(current, "__sglang_trinv__", False):  # leave alone anything someone else rebound since
            setattr(module, name, original)
            restored += 1
    STATE.bindings.clear()
    return restored

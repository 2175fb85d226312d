"""sglang-trinv as an SGLang plugin (entry point group ``sglang.srt.plugins``).

``register()`` runs in every SGLang process (``sglang.srt.plugins.load_plugins``: CLI, engine, tokenizer,
detokenizer, DP controller, each scheduler/TP worker). It

1. hooks ``ServerArgs`` so the server accepts ``--linear-attn-inv`` / ``--linear-attn-inv-precision``
   (see :mod:`.args`); the CLI process writes the choice to ``SGLANG_LINEAR_ATTN_INV`` /
   ``SGLANG_LINEAR_ATTN_INV_PRECISION``, which the spawned processes inherit;
2. reads those variables and, for a method other than ``stock``, patches the GDN Triton chunk prefill when
   SGLang imports it (:mod:`.gdn`), likewise the KDA chunk prefill (:mod:`.kda`), and applies the backend policy
   (:mod:`.backends`).

``patch()`` / ``unpatch()`` do the same by hand (notebooks, tests, ``sglang.Engine``: they also set the
environment variables, so schedulers an Engine spawns afterwards follow).
"""

from __future__ import annotations

import importlib
import os
from typing import NamedTuple

from . import _imports, args, backends, gdn, kda
from ._state import (
    ENV_METHOD,
    ENV_PRECISION,
    STATE,
    STOCK,
    IncompatibleSGLangError,
    logger,
    restore_bindings,
    sglang_version,
)

__all__ = [
    "ENV_METHOD", "ENV_PRECISION", "STOCK", "Active", "IncompatibleSGLangError",
    "active", "choices", "patch", "register", "unpatch",
]

# module -> callback applied when SGLang imports it, while a method is selected
_ON_IMPORT = ((gdn.CHUNK, gdn.apply), (kda.KDA, kda.apply), (backends.GDN_BACKEND, backends.apply))
_hooks_registered = False


class Active(NamedTuple):
    method: str  # "stock" or a registry method name
    precision: str | None  # None: the method's default
    patched: tuple[str, ...]  # what this process has patched so far ("gdn", "gdn_prefill_default", ...)
    counts: dict[str, int]  # "gdn"/"kda": calls into our kernels, "gdn_fallback"/"kda_fallback": sent to stock, "register"


def active() -> Active:
    with STATE.lock:
        return Active(STATE.method, STATE.precision, tuple(sorted(STATE.patched)), dict(STATE.counts))


def choices() -> tuple[str, ...]:
    from ..registry import METHOD_NAMES

    return (STOCK, *METHOD_NAMES)


def _validate(method: str, precision: str | None) -> tuple[str, str | None]:
    from ..registry import METHODS, check_precision

    if method != STOCK and method not in METHODS:
        raise ValueError(f"unknown --linear-attn-inv method {method!r}; choose from: {', '.join(choices())}")
    if precision is not None:
        check_precision(precision)
    return method, precision


def env_selection(validate: bool = True) -> tuple[str, str | None]:
    method = os.environ.get(ENV_METHOD, "").strip() or STOCK
    precision = os.environ.get(ENV_PRECISION, "").strip() or None
    if validate:
        try:
            _validate(method, precision)
        except ValueError as e:
            raise ValueError(f"{ENV_METHOD}={method!r} {ENV_PRECISION}={precision!r}: {e}") from None
    return method, precision


def _export_env(method: str, precision: str | None) -> None:
    if method == STOCK:
        os.environ.pop(ENV_METHOD, None)
    else:
        os.environ[ENV_METHOD] = method
    if precision is None or method == STOCK:
        os.environ.pop(ENV_PRECISION, None)
    else:
        os.environ[ENV_PRECISION] = precision


def _announce() -> None:
    if STATE.method == STOCK:
        logger.info("sglang-trinv: --linear-attn-inv=stock on SGLang %s: GDN/KDA kernels untouched", sglang_version())
        return
    precision = gdn.precision_label(STATE.method, STATE.precision)
    logger.info(
        "sglang-trinv: --linear-attn-inv=%s precision=%s on SGLang %s: GDN Triton chunk prefill uses it "
        "(patched where SGLang loads the kernels); KDA chunk prefill %s; decode, target-verify and non-Triton "
        "backends untouched",
        STATE.method, precision, sglang_version(), kda.status(),
    )


def _deactivate() -> None:
    for name, callback in _ON_IMPORT:
        _imports.cancel(name, callback)
    _imports.cancel(gdn.CHUNK, _refuse_import)
    restore_bindings()
    STATE.patched.clear()
    STATE.method, STATE.precision = STOCK, None


def _activate(method: str, precision: str | None, eager: bool) -> None:
    with STATE.lock:
        if method == STOCK:
            _deactivate()
            return
        gdn.static_check()
        if eager:
            gdn.check_ops(method, precision)
        changed = (method, precision) != (STATE.method, STATE.precision)
        STATE.method, STATE.precision = method, precision
        STATE.error = None
        _imports.cancel(gdn.CHUNK, _refuse_import)
        if changed:
            _announce()
        if eager:  # patch now instead of when SGLang imports chunk.py
            importlib.import_module(gdn.CHUNK)
        for name, callback in _ON_IMPORT:
            _imports.when_imported(name, callback)


def select(method: str, precision: str | None = None) -> None:
    """The server's choice (from the CLI hook): validate, export to spawned processes, activate here lazily."""
    method, precision = _validate(method, precision)
    if method != STOCK:
        gdn.static_check()
        gdn.check_ops(method, precision)
    _export_env(method, precision)
    _activate(method, precision, eager=False)
    if method == STOCK:
        _announce()


def patch(method: str = "blockdoubling", precision: str | None = None) -> None:
    """Route SGLang's GDN chunk prefill through ``method`` now, in this process and in processes it spawns.

    ``stock`` is the same as :func:`unpatch`. Raises on an unknown method/precision, missing kernels or an
    SGLang whose hook targets are missing.
    """
    method, precision = _validate(method, precision)
    if method == STOCK:
        unpatch()
        return
    try:
        _activate(method, precision, eager=True)
    except BaseException:
        _deactivate()
        raise
    _export_env(method, precision)


def unpatch() -> None:
    """Restore SGLang's stock functions (every replaced binding) and clear the environment selection."""
    with STATE.lock:
        _deactivate()
        STATE.error = None
        _export_env(STOCK, None)


def _refuse_import(module) -> None:
    raise STATE.error


def register() -> None:
    """Entry point ``sglang.srt.plugins: sglang_trinv``; runs inside ``load_plugins()`` in every process."""
    global _hooks_registered
    STATE.counts["register"] += 1
    if not _hooks_registered:
        args.register_hooks()
        _hooks_registered = True
    try:
        method, precision = env_selection()
        if method != STOCK:
            _activate(method, precision, eager=False)
    except Exception as e:
        # load_plugins() only logs a plugin's exception; keep the error so ServerArgs.resolve_once and the
        # import of SGLang's GDN kernels raise it: a bad selection must not quietly serve stock kernels
        STATE.error = e
        _imports.when_imported(gdn.CHUNK, _refuse_import)
        raise

"""Backend policy: our kernels live inside SGLang's *Triton* GDN prefill.

SGLang picks the linear-attention prefill kernel per model runner in
``srt/layers/attention/attention_registry.py`` via
``srt/layers/attention/linear/utils.py::resolve_linear_attn_backends(prefill_default)``
("Linear attention kernel backend: decode=..., prefill=..., verify=..." in the log):
``--linear-attn-prefill-backend`` or else ``--linear-attn-backend`` (default ``triton``), unless neither is
set and ``gdn_backend.py::flashinfer_gdn_prefill_default`` auto-selects FlashInfer (SM90/SM100, head dim 128,
FlashInfer GDN prefill installed).

Policy with ``--linear-attn-inv`` = a method:
- an explicit non-Triton prefill backend (flashinfer, cutedsl, ...) is a contradiction: refuse at start-up;
- SGLang's *automatic* FlashInfer GDN prefill default is declined (logged), so the requested method runs;
- decode and target-verify backends are never touched.
"""

from __future__ import annotations

import functools

from ._state import STATE, STOCK, logger, rebind

GDN_BACKEND = "sglang.srt.layers.attention.linear.gdn_backend"
PREFILL_DEFAULT = "flashinfer_gdn_prefill_default"


def check_server_args(server_args) -> None:
    """Refuse an explicitly chosen non-Triton prefill backend together with a method."""
    if STATE.method == STOCK:
        return
    explicit = getattr(server_args, "linear_attn_prefill_backend", None)
    base = getattr(server_args, "linear_attn_backend", "triton")
    prefill = explicit or base
    if prefill not in (None, "triton"):
        flag = "--linear-attn-prefill-backend" if explicit else "--linear-attn-backend"
        raise ValueError(
            f"--linear-attn-inv={STATE.method} replaces the (I+A)^-1 inside SGLang's Triton GDN prefill, "
            f"but {flag}={prefill} selects another prefill kernel. Use --linear-attn-prefill-backend triton "
            f"(decode may keep --linear-attn-decode-backend {prefill}), or --linear-attn-inv stock."
        )


def apply(gdn_backend_module) -> None:
    """Decline SGLang's automatic FlashInfer GDN prefill while a method is selected."""
    with STATE.lock:
        stock = getattr(gdn_backend_module, PREFILL_DEFAULT, None)
        if stock is None or getattr(stock, "__sglang_trinv__", False):
            return  # older SGLang without the auto default (nothing to decline), or already wrapped

        @functools.wraps(stock)
        def flashinfer_gdn_prefill_default(*args, **kwargs):
            choice = stock(*args, **kwargs)
            if choice is not None and STATE.method != STOCK:
                logger.warning(
                    "sglang-trinv: SGLang would default GDN prefill to %s on this GPU; keeping Triton so that "
                    "--linear-attn-inv=%s is used (to get %s prefill, pass --linear-attn-inv stock "
                    "--linear-attn-prefill-backend %s)", choice, STATE.method, choice, choice,
                )
                return None
            return choice

        flashinfer_gdn_prefill_default.__sglang_trinv__ = True
        rebind(stock, flashinfer_gdn_prefill_default)
        STATE.patched.add("gdn_prefill_default")

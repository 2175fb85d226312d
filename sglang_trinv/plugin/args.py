"""Server flags, through SGLang's plugin hook registry.

``sglang serve`` (``sglang/cli/serve.py``) and ``python -m sglang.launch_server`` call
``sglang.srt.plugins.load_plugins()`` before ``sglang.srt.server_args.prepare_server_args(argv)``, which
builds an argparse parser with ``ServerArgs.add_cli_args(parser)`` and turns the namespace into ServerArgs
with ``ServerArgs.from_cli_args(args)``. ServerArgs fields come from ``srt/arg_groups/fields`` and cannot be
extended by plugins, so we hook the two methods (``HookRegistry``, AFTER / AROUND) instead:

- ``add_cli_args``: add ``--linear-attn-inv`` / ``--linear-attn-inv-precision`` (defaults from the env);
- ``from_cli_args``: validate, write the choice to the environment (spawned schedulers, TP workers and the DP
  controller inherit it and read it in their own ``register()``), activate it in this process;
- ``ServerArgs.resolve_once`` (BEFORE; run by the launcher and by ``sglang.Engine``; SGLang ≥ 0.5.19): refuse
  contradictions and re-raise errors ``load_plugins()`` would only have logged. SGLang 0.5.17–0.5.18 have no
  ``resolve_once``: there the same checks run at the end of ``from_cli_args``.
"""

from __future__ import annotations

import argparse

from ._state import ENV_METHOD, ENV_PRECISION, STATE, STOCK, IncompatibleSGLangError, sglang_version

SERVER_ARGS = "sglang.srt.server_args.ServerArgs"
FLAG = "--linear-attn-inv"
PRECISION_FLAG = "--linear-attn-inv-precision"


def check_hook_targets() -> None:
    from sglang.srt import server_args

    cls = getattr(server_args, "ServerArgs", None)
    missing = [m for m in ("add_cli_args", "from_cli_args") if not callable(getattr(cls, m, None))]
    if missing:
        raise IncompatibleSGLangError(
            f"SGLang {sglang_version()}: {SERVER_ARGS} lacks {', '.join(missing)}; sglang-trinv cannot add "
            f"{FLAG} to this SGLang"
        )


def _precision(value: str) -> str:
    from ..registry import check_precision

    try:
        return check_precision(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_cli_args_hook(result, parser: argparse.ArgumentParser, *args, **kwargs):
    from ..reference.precision import PRECISIONS
    from ..registry import METHOD_NAMES
    from . import env_selection

    if any(FLAG in action.option_strings for action in parser._actions):
        return None
    method, precision = env_selection(validate=False)  # an invalid env value is reported by from_cli_args
    group = parser.add_argument_group("sglang-trinv (linear-attention (I+A)^-1 plugin)")
    group.add_argument(
        FLAG, type=str, default=method, choices=[STOCK, *METHOD_NAMES],
        help=f"Inversion used by the Triton GDN chunk prefill. '{STOCK}' (default) leaves SGLang's kernel "
        f"untouched. Needs the Triton prefill backend. Env: {ENV_METHOD}.",
    )
    group.add_argument(
        PRECISION_FLAG, type=_precision, default=precision, metavar="{" + ",".join(PRECISIONS) + "}[/MERGE]",
        help="Tensor-core precision of the inversion's products, or DIAG/MERGE for the 16x16 diagonal tiles and "
        "the merges apart, e.g. bf16x3/tf32, MERGE optionally per doubling level as M16+M32 (bf16x3/bf16x3+tf32), "
        "M32 optionally as Pin*Pout for the inner / outer products of the 32 -> 64 merges "
        "('bf16x3/bf16x3+bf16x3*tf32') "
        f"(default: the kernel's per-method default). Env: {ENV_PRECISION}.",
    )
    return None


def _has_resolve_once() -> bool:
    from sglang.srt import server_args

    return callable(getattr(server_args.ServerArgs, "resolve_once", None))


def from_cli_args_hook(original, cls, args: argparse.Namespace, *rest, **kwargs):
    from . import select

    method = getattr(args, "linear_attn_inv", None)
    if method is not None:  # None: this parser was built without our flags; the env (if any) stands
        select(method, getattr(args, "linear_attn_inv_precision", None))
    server_args = original(cls, args, *rest, **kwargs)
    if not _has_resolve_once():  # SGLang 0.5.17–0.5.18: check here what resolve_once would have
        resolve_once_hook(server_args)
    return server_args


def resolve_once_hook(server_args, *args, **kwargs):
    from . import backends, gdn

    if STATE.error is not None:
        raise STATE.error
    if STATE.method != STOCK:
        gdn.static_check()
        gdn.check_ops(STATE.method, STATE.precision)
        backends.check_server_args(server_args)
    return None


def register_hooks() -> None:
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    check_hook_targets()
    HookRegistry.register(f"{SERVER_ARGS}.add_cli_args", add_cli_args_hook, HookType.AFTER)
    HookRegistry.register(f"{SERVER_ARGS}.from_cli_args", from_cli_args_hook, HookType.AROUND)
    if _has_resolve_once():
        HookRegistry.register(f"{SERVER_ARGS}.resolve_once", resolve_once_hook, HookType.BEFORE)

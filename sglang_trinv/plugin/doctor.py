"""``sglang-trinv check``: what the plugin will do in this environment, before a server is started.

Reports the SGLang/torch/Triton versions and the GPU, whether SGLang's server-argument hooks and the GDN / KDA
prefill functions the plugin patches exist, whether the GDN pipeline can be fused (and whether A is written),
how KDA prefill will be served, and that a method/precision choice is valid for the kernels. Exit code 0 when
``--linear-attn-inv METHOD`` would patch GDN prefill here, 1 otherwise (the reasons are printed).
"""

from __future__ import annotations

import argparse
import importlib


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--method", default="blockdoubling", help="the --linear-attn-inv choice to check")
    ap.add_argument("--precision", default=None, help="the --linear-attn-inv-precision choice to check")


def run(args: argparse.Namespace) -> int:
    rows: list[tuple[str, bool | None, str]] = []  # (item, ok (None: information), detail)

    def add(item, ok, detail):
        rows.append((item, ok, detail))

    try:
        import torch
        import triton

        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none (kernels run only under the " \
                                                                               "Triton interpreter)"
        add("torch / triton", None, f"{torch.__version__} / {triton.__version__}; GPU: {gpu}")
    except Exception as e:  # noqa: BLE001
        add("torch / triton", False, f"import failed: {e}")
    from ._state import ENV_FUSE_PIPELINE, IncompatibleSGLangError, sglang_version

    add("SGLang", None, sglang_version())
    from . import args as plugin_args, gdn, kda

    for item, fn in (("server-argument hooks", plugin_args.check_hook_targets), ("GDN prefill hook", gdn.static_check)):
        try:
            fn()
            add(item, True, "present")
        except (IncompatibleSGLangError, ImportError) as e:
            add(item, False, str(e))
    try:
        gdn.check_ops(args.method, args.precision)
        from ..registry import get_method

        stable = get_method(args.method).stable
        add(f"method {args.method}" + (f" @ {args.precision}" if args.precision else ""), True,
            f"kernel precision {gdn.precision_label(args.method, args.precision)}" +
            ("" if stable else "; WARNING: marked unstable (wrong results on correlated keys, see README)"))
    except (ValueError, ImportError) as e:
        add(f"method {args.method}", False, str(e))
    try:
        chunk = importlib.import_module(gdn.CHUNK)
        reason, store_A = gdn.pipeline_check(chunk)
        if reason:
            add("GDN pipeline fusion", None, f"not possible ({reason}): only the intra kernel is swapped")
        else:
            o_reason = gdn.output_stage_reason(chunk)
            add("GDN pipeline fusion", None, "possible: gate cumsum in our kernel, A " +
                ("written (a caller reads it)" if store_A else "not written (SGLang drops it)") +
                f"; {ENV_FUSE_PIPELINE}=0 disables it; output stage " +
                (f"stock ({o_reason})" if o_reason else f"without the memset of o ({gdn.ENV_O_MEMSET}=1 keeps "
                 "stock's)"))
            stage, st_reason = gdn.state_stage(chunk, o_memset=o_reason is not None)
            add("GDN state recurrence", None, gdn.state_stage_label(stage) +
                (f" (not as asked: {st_reason})" if st_reason else "") +
                f"; {gdn.ENV_STATE_LAUNCH}=sglang keeps SGLang's own, {gdn.ENV_OVERLAP_O}=1 runs the output stage "
                "beside it (experimental, measured slower)")
    except Exception as e:  # noqa: BLE001 (report, do not crash a diagnostic)
        add("GDN pipeline fusion", None, f"not checked ({type(e).__name__}: {e})")
    try:  # the warp-specialized Hopper kernel behind ops.gdn_fwd_intra (information only)
        from ..ops import ENV_GLUON, ENV_GLUON_MIN_TILES, gluon_intra, gluon_min_tiles

        if not gluon_intra.AVAILABLE:
            detail = f"not available (triton.experimental.gluon: {gluon_intra.IMPORT_ERROR})"
        elif not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0):
            detail = "not used: needs an sm_90 GPU (H100/H200)"
        else:
            detail = (f"available for blockdoubling, bf16, K=V=128; taken for calls of ≥ {gluon_min_tiles()} "
                      f"(chunk, head) tiles ({ENV_GLUON_MIN_TILES}), where it was measured faster with its host "
                      "launch cost (the log says which kernel serves)")
        add("Gluon intra kernel", None, f"{detail}; {ENV_GLUON}=0|1 forces Triton|Gluon")
    except Exception as e:  # noqa: BLE001 (report, do not crash a diagnostic)
        add("Gluon intra kernel", None, f"not checked ({type(e).__name__}: {e})")
    from ..ops import direct_launch
    add("direct kernel launch", None, f"{'on' if direct_launch.enabled() else 'off'} ({direct_launch.ENV}=1: "
        "after a launch kind's first JIT launch, call the compiled kernel's launcher; experimental)")
    add("KDA prefill", None, kda.status())
    try:
        why_not = kda.caller_drops_akk(importlib.import_module(kda.KDA))
        add("KDA Akk store", None, "skipped in chunk_kda_fwd (SGLang drops Akk)" if why_not is None else
            f"kept ({why_not})")
    except Exception as e:  # noqa: BLE001 (report, do not crash a diagnostic)
        add("KDA Akk store", None, f"not checked ({type(e).__name__}: {e})")
    try:
        if kda.mode() == "0" or not kda.kernel_available():
            detail = "SGLang's own kernel and launch (KDA stays stock)"
        else:
            st_reason = kda.state_launch_reason(importlib.import_module(kda.KDA))
            detail = (f"SGLang's own kernel and launch ({st_reason})" if st_reason else kda.state_launch_label() +
                      f"; {gdn.ENV_STATE_LAUNCH}=sglang keeps SGLang's own")
        add("KDA state recurrence", None, detail)
    except Exception as e:  # noqa: BLE001 (report, do not crash a diagnostic)
        add("KDA state recurrence", None, f"not checked ({type(e).__name__}: {e})")

    width = max(len(r[0]) for r in rows)
    for item, ok, detail in rows:
        mark = "  " if ok is None else ("ok" if ok else "NO")
        print(f"[{mark}] {item:{width}s}  {detail}")
    bad = [r for r in rows if r[1] is False]
    print("\n" + ("--linear-attn-inv %s would patch GDN prefill here" % args.method if not bad else
                  "--linear-attn-inv %s would NOT work here: %s" % (args.method, "; ".join(r[0] for r in bad))))
    return 1 if bad else 0

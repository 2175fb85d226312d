"""``sglang-trinv bench layer``: the whole SGLang GDN layer forward (``chunk_gated_delta_rule_fwd``: cumsum,
intra, state recurrence, output), stock vs through the plugin, over the benchmark shapes (bf16, K=V=128),
timed eagerly as SGLang runs GDN prefill (do_bench: host launches included) and as CUDA-graph replays (GPU only):
T ∈ {8192, 32768, 4096}, (H, Hg) ∈ {(32, 16), (8, 4)}, one sequence and a varlen batch of 8. Per shape:
stock, blockdoubling with the fused pipeline (gate cumsum in our kernel, A not written), blockdoubling
swapping only the intra kernel, column_sweep (fused pipeline); beside each time the output's and final
state's max-rel error against the fp64 twin of the whole forward (``reference.gdn.chunk_fwd``, exact inverse)
and their difference to stock. Writes ``DIR/whole.json`` and ``DIR/whole.md`` as it goes, ``DIR/whole.png``
(speed-up per shape) at the end.

    sglang-trinv bench layer --out DIR [--smoke] [--shapes stages] [--shape T,H,Hg,SEQS ...] [--precision P ...]

``--shapes stages``: only the six shapes of ``bench stages`` (one sequence at T=8192/32768 × H=32/8, 8 sequences
at T=8192 H=32 and T=32768 H=8), for a shorter GPU call; ``--shape`` (repeatable) names shapes instead. The
meta records whether the direct kernel launch (SGLANG_TRINV_DIRECT_LAUNCH) was on. ``--precision`` (repeatable) adds
blockdoubling's fused pipeline at that precision to every shape, timed in the same process (an A/B of precisions).
"""

from __future__ import annotations

import argparse
import sys

from . import common


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", default="bench/results/latest-layer")
    ap.add_argument("--smoke", action="store_true", help="CPU + Triton interpreter, tiny shapes (checks the script)")
    ap.add_argument("--shapes", choices=("all", "stages"), default="all",
                    help="all: the issue's 12 shapes; stages: the 6 shapes of `bench stages`")
    ap.add_argument("--shape", action="append", type=common.shape_arg, default=[], metavar="T,H,Hg,SEQS",
                    help="only this shape (repeatable; overrides --shapes), e.g. 8192,32,16,1")
    ap.add_argument("--precision", action="append", type=_precision, default=[], metavar="PRECISION",
                    help="also time blockdoubling at this precision (repeatable; fused pipeline, same process as "
                         "the default), e.g. bf16x3")


def _precision(text: str) -> str:
    from ..registry import check_precision

    try:
        return check_precision(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def run(args) -> int:
    import os

    import torch

    from . import kernels as bk

    os.makedirs(args.out, exist_ok=True)
    if args.smoke:
        bk.DEV = "cpu"
        shapes, dim = [(100, 2, 1, 2)], 16
    else:
        shapes = [(T, H, Hg, n) for T in (8192, 32768, 4096) for H, Hg in ((32, 16), (8, 4)) for n in (1, 8)]
        if args.shapes == "stages":
            from .stages import SHAPES as shapes
        shapes = args.shape or shapes
        dim = 128
    meta = common.run_meta(bk.DEV, fla=None)
    from ..ops import direct_launch
    meta["direct_launch"] = direct_launch.enabled()
    rows = []
    for T, H, Hg, n in shapes:
        print(f"T={T} H={H}/{Hg} seqs={n}", flush=True)
        inp = bk.make_inputs(T, H, Hg, dim, dim, n, 0)
        if not args.smoke:
            bk.retune_stock()  # stock's intra autotuner keys on the head count only: tune it at this shape
        bk.run_whole(inp, dict(T=T, H=H, Hg=Hg, nseq=n), rows, None, tuple(args.precision))
        common.save_results(args.out, "whole", meta, rows)
        del inp
        if not args.smoke:
            torch.cuda.empty_cache()
    md = bk.to_markdown(meta, rows)
    common.save_results(args.out, "whole", meta, rows, md)
    common.try_plot(bk.plot, meta, rows, os.path.join(args.out, "whole.png"), [("gdn_fwd", "whole GDN forward")])
    print(md)
    return 0


def main(argv=None) -> int:
    return common.cli_main(__doc__, add_arguments, run, argv, prog="sglang-trinv bench layer")


if __name__ == "__main__":
    sys.exit(main())

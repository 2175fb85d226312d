"""The whole GDN forward's output error per inversion scheme, on a CPU (session 13). The GPU showed (H100, 8 draws,
bench/results/2026-11-28-s13 §1) that on identical keys the split merge precision 'bf16x3/bf16x3+bf16x3*tf32'
brings w below stock's error but leaves the output o above stock's on every draw (2.77e-2 vs 2.40e-2), while
all-bf16x3 merges put o below (2.18e-2). Does an emulation of the forward's roundings reproduce that ordering?

Emulation: reference.gdn.chunk_fwd_rounded (the pipeline's bf16 roundings) with each scheme's twin (operand
rounding of every product emulated, reference/precision.py — tf32 operands truncated as the tensor core reads
them). Error: max|o − o₆₄| / max|o₆₄| against the fp64 twin (exact inverse, no rounding). With tf32 rounded to
nearest instead the emulation does not reproduce the GPU's ordering; truncated, it does (identical keys, 8 CPU
draws: stock 2.32e-2, split 2.81e-2 above stock on 8 of 8, all-bf16x3 2.18e-2; GPU 2.40e-2 / 2.77e-2 / 2.18e-2).

    python bench/precision_o.py [OUT.md] [--seeds 3,4,5]
"""
import os
import statistics
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from precision_levels import bk, stock_twin, twin, write_md  # noqa: E402  (the interpreter on, bk.DEV = cpu)

from sglang_trinv.reference import gdn as G  # noqa: E402

# name: (whose w/u recompute — reference.gdn.chunk_fwd_rounded's wu —, the inversion's twin)
SCHEMES = {
    "stock (substitution 16 + tf32 merges)": ("stock", stock_twin),
    "bf16x3/bf16x3+tf32 (default until s13)": ("ours", twin("bf16x3/bf16x3+tf32")),
    "bf16x3/bf16x3+bf16x3*tf32 (split)": ("ours", twin("bf16x3/bf16x3+bf16x3*tf32")),
    "bf16x3 (default)": ("ours", twin("bf16x3")),
}


def family_inputs(family, seed, T=4096, H=8, Hg=4, D=128):
    """The benchmark's family (bench kernels' make_inputs, CPU draws) plus q and the initial state as the GPU
    benchmark builds them (normalised bf16 q, h0 ~ 0.1·N(0, 1))."""
    inp = bk.make_inputs(T, H, Hg, D, D, 1, seed, dtype=torch.bfloat16, family=family)
    gen = torch.Generator().manual_seed(seed + 1000)
    q = F.normalize(torch.randn(1, T, Hg, D, generator=gen), dim=-1).to(torch.bfloat16)
    h0 = torch.randn(1, H, D, D, generator=gen) * 0.1
    return q, inp["k"], inp["v"], inp["g_raw"], inp["beta"], h0


def o_errors(family, seed, T=4096, H=8, Hg=4, D=128, schemes=None):
    """{scheme: o max-rel error vs the fp64 twin} on one draw of a family."""
    q, k, v, g, beta, h0 = family_inputs(family, seed, T, H, Hg, D)
    scale = D ** -0.5
    o64, _ = G.chunk_fwd(q, k, v, g, beta, scale, h0)
    out = {}
    for name, (kind, invert) in (schemes or SCHEMES).items():
        o = G.chunk_fwd_rounded(q, k, v, g, beta, scale, h0, invert, wu=kind)
        out[name] = float((o.double() - o64).abs().max() / o64.abs().max())
    return out


def main(argv) -> int:
    seeds = [3, 4, 5]
    if "--seeds" in argv:
        seeds = [int(x) for x in argv[argv.index("--seeds") + 1].split(",")]
    out = next((a for a in argv if a.endswith(".md")), None)
    md = ["| family | scheme | o max-rel, median / max over draws | ≤ stock on draws |", "|---|---|---|---|"]
    for fam in ("identical_keys", "beta_1_2"):
        per = [o_errors(fam, s) for s in seeds]
        stock = [p[next(iter(SCHEMES))] for p in per]
        for name in SCHEMES:
            xs = [p[name] for p in per]
            wins = sum(x <= s for x, s in zip(xs, stock))
            md.append(f"| {fam} | {name} | {statistics.median(xs):.2e} / {max(xs):.2e} | {wins}/{len(xs)} |")
            print(md[-1], flush=True)
    write_md(out, f"Whole-forward o error per inversion scheme (T=4096, H=8/4, K=V=128, draws {seeds})", md)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

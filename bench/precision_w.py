"""w's error on the adversarial families per merge scheme, on a CPU (session 12): the GPU showed the default
per-level merges (bf16x3 16→32, tf32 32→64) giving w = Ai·diag(β e^g)·K an error above stock's on both families
(identical keys 2.19e-2 vs 1.02e-2, β ∈ (1, 2] 2.74e-2 vs 1.86e-2; all-bf16x3 merges 9.96e-4 / 1.80e-2,
bench/results/2026-11-27-s12 call 7) although A's error is 2.3–10× below stock's. Why: with (nearly) identical
keys the rows of K are equal, so w_i = (Σ_j Ai_ij β_j e^{g_j}) k — the row sums of Ai's *absolute* errors add
up coherently, and the tf32 32→64 products leave absolute errors of ~2^-11 on the cancelling A21·X11.

Emulation: bf16 inputs as on the GPU (the CPU generator, so other draws than the GPU run), Ai by the reference
twins with the GPU's operand rounding (reference/precision.py), w = bf16(Ai)·bf16(β e^g k) in fp32, against the
fp64 twin. The 32→64 merge X21 = −X22·(A21·X11) is two products: "P1*P2" names inner (A21·X11) and outer
precision separately, to find the cheapest scheme whose w error stays ≤ stock's.

    python bench/precision_w.py [OUT.md]
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from precision_levels import stock_twin, twin, write_md  # noqa: E402  (turns the interpreter on, bk.DEV = cpu)

from sglang_trinv.benchmarks import kernels as bk  # noqa: E402
from sglang_trinv.reference import gdn as G  # noqa: E402

SCHEMES = {
    "stock: substitution 16 + tf32 merges": stock_twin,
    "bf16x3 / bf16x3, tf32 (default until s13)": twin("bf16x3/bf16x3+tf32"),
    "bf16x3 / bf16x3, bf16x3 (default)": twin("bf16x3"),
    "bf16x3 / bf16x3, bf16x3*tf32": twin("bf16x3/bf16x3+bf16x3*tf32"),
    "bf16x3 / bf16x3, tf32*bf16x3": twin("bf16x3/bf16x3+tf32*bf16x3"),
    "bf16x3 / bf16x3, tf32x3": twin("bf16x3/bf16x3+tf32x3"),
    "bf16x3 / tf32, tf32": twin("bf16x3/tf32"),
}


def w_error(Ai, k, g, beta, w64):
    """w = bf16(Ai)·bf16(β e^g k) with fp32 accumulation (the kernels' w product), max-rel vs the fp64 w."""
    H, Hg = beta.shape[-1], k.shape[-2]
    kb = k.float().repeat_interleave(H // Hg, dim=2) * (beta.float() * torch.exp(g.float()))[..., None]
    w = G.chunk_matmul(Ai.to(torch.bfloat16).float(), kb.to(torch.bfloat16).float(), None)
    return float((w.double() - w64).abs().max() / w64.abs().max())


def main(out=None) -> int:
    md = ["| family | scheme (diagonal / merges 16→32, 32→64) | A max_rel (fp32) | w max_rel |", "|---|---|---|---|"]
    for fam in ["identical_keys", "beta_1_2"]:
        inp = bk.make_inputs(4096, 8, 4, 128, 128, 1, 3, dtype=torch.bfloat16, family=fam)
        k, g, beta = inp["k"], inp["g"], inp["beta"]
        A32 = G.chunk_A(k, g, beta, None, dtype=torch.float32)
        w64, _, Ai64 = G.fwd_intra(k, inp["v"], g, beta, None)
        for name, f in SCHEMES.items():
            X = G.chunk_apply(A32, f, None)
            e_a = float((X.double() - Ai64).abs().max() / Ai64.abs().max())
            md.append(f"| {fam} | {name} | {e_a:.2e} | {w_error(X, k, g, beta, w64):.2e} |")
            print(md[-1], flush=True)
    write_md(out, "w error per merge scheme", md)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))

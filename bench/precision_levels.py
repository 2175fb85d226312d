"""Merge precision per doubling level, on a CPU (the reference twins with the GPU's operand rounding emulated,
`reference/precision.py`): A error of stock's scheme (16×16 substitution + tf32 merges) vs blockdoubling with
bf16x3 16×16 diagonal tiles and tf32 / bf16x3 / mixed merges (16→32 level, 32→64 level), on the two adversarial
families of `bench kernels` (T=1024 here, H=8, fp32 keys). Question: can tf32 carry part of the merges (their
speed: +5 % on the GPU for all of them) with the error still ≤ stock's?

    python bench/precision_levels.py [OUT.md]
"""
import sys

import torch

from sglang_trinv.testing import enable_interpreter

enable_interpreter()  # make_inputs takes SGLang's Triton cumsum, which runs on a CPU under the interpreter
from sglang_trinv.benchmarks import kernels as bk  # noqa: E402
from sglang_trinv.reference import gdn as G  # noqa: E402
from sglang_trinv.reference import inverse as R  # noqa: E402
from sglang_trinv.reference.precision import matmul, round_to  # noqa: E402

bk.DEV = "cpu"


def doubling_by_level(levels, inner="bf16x3"):
    """(I + A)^{-1}: 16×16 diagonal blocks by blockdoubling in ``inner``, then the doubling merges with
    ``levels[i]`` the product precision of level i (16→32, 32→64): "P" for both products of X21 = −X22·(A21·X11),
    or "P1*P2" for the inner A21·X11 in P1 and the outer product in P2 (bench/precision_w.py)."""
    def invert(A):
        A2, n, dtype = R._prepare(A)
        Ap = R._pad_pow2(A2, multiple=16)
        D = R.INNER_METHODS["blockdoubling"](R.diag_blocks(Ap, 16), precision=inner).to(Ap.dtype)
        b, lvl = 16, 0
        while D.shape[-3] > 1:
            p_in, _, p_out = levels[lvl].partition("*")
            X11, X22 = D[..., 0::2, :, :], D[..., 1::2, :, :]
            X21 = -matmul(X22, matmul(R.diag_blocks(Ap, 2 * b)[..., b:, :b], X11, p_in), p_out or p_in)
            D = torch.cat([torch.cat([X11, torch.zeros_like(X11)], -1), torch.cat([X21, X22], -1)], -2)
            b, lvl = 2 * b, lvl + 1
        return D[..., 0, :n, :n].to(dtype)
    return invert


SCHEMES = {
    "stock: substitution 16 + tf32 merges": lambda A: R.forward_substitution(A, 16, "tf32"),
    "blockdoubling bf16x3 / tf32, tf32": doubling_by_level(["tf32", "tf32"]),
    "blockdoubling bf16x3 / bf16x3, bf16x3": doubling_by_level(["bf16x3", "bf16x3"]),
    "blockdoubling bf16x3 / tf32, bf16x3": doubling_by_level(["tf32", "bf16x3"]),
    "blockdoubling bf16x3 / bf16x3, tf32": doubling_by_level(["bf16x3", "tf32"]),
}


def main(out=None) -> int:
    md = ["| family | scheme (diagonal / merges 16→32, 32→64) | max_rel bf16 out | max_rel fp32 out |",
          "|---|---|---|---|"]
    for fam in ["identical_keys", "beta_1_2"]:
        inp = bk.make_inputs(1024, 8, 4, 128, 128, 1, 3, dtype=torch.float32, family=fam)
        k, g, beta = inp["k"], inp["g"], inp["beta"]
        A32 = G.chunk_A(k, g, beta, None, dtype=torch.float32)
        X64 = G.chunk_apply(G.chunk_A(k, g, beta, None, dtype=torch.float64), R.exact_inverse, None)
        for name, f in SCHEMES.items():
            X = G.chunk_apply(A32, f, None)
            e_bf = float((round_to(X.float(), "bf16").double() - X64).abs().max() / X64.abs().max())
            e_32 = float((X.double() - X64).abs().max() / X64.abs().max())
            md.append(f"| {fam} | {name} | {e_bf:.2e} | {e_32:.2e} |")
            print(md[-1], flush=True)
    if out:
        with open(out, "w") as fh:
            fh.write("# Merge precision per doubling level — CPU emulation (reference twins, "
                     f"torch {torch.__version__})\n\n" + "\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))

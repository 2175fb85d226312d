"""Merge precision per doubling level, on a CPU (the reference twins with the GPU's operand rounding emulated,
`reference/precision.py`): A error of stock's scheme (16×16 substitution + tf32 merges) vs blockdoubling with
bf16x3 16×16 diagonal tiles and tf32 / bf16x3 / mixed merges (16→32 level, 32→64 level), on the two adversarial
families of `bench kernels` (T=1024 here, H=8, fp32 keys). Question: can tf32 carry part of the merges (their
speed: +5 % on the GPU for all of them) with the error still ≤ stock's?

    python bench/precision_levels.py [OUT.md]

Also the base of bench/precision_w.py and bench/precision_o.py: the interpreter on (make_inputs takes SGLang's
Triton cumsum), stock's and the kernels' twins, the report writer.
"""
import sys

import torch

from sglang_trinv.testing import enable_interpreter

enable_interpreter()  # make_inputs takes SGLang's Triton cumsum, which runs on a CPU under the interpreter
from sglang_trinv import ops  # noqa: E402
from sglang_trinv.benchmarks import kernels as bk  # noqa: E402
from sglang_trinv.reference import gdn as G  # noqa: E402
from sglang_trinv.reference import inverse as R  # noqa: E402
from sglang_trinv.reference.precision import round_to  # noqa: E402

bk.DEV = "cpu"


def stock_twin(A):
    """SGLang's scheme: 16×16 row substitution (fp32), then tf32 merges."""
    return R.forward_substitution(A, 16, "tf32")


def twin(precision: str):
    """The blockdoubling kernels' tree at ``precision`` ("DIAG/M16+M32", M32 optionally "Pin*Pout")."""
    return ops.kernel_twin("blockdoubling", precision)


def write_md(out: str | None, title: str, md: list[str]) -> None:
    """The emulation scripts' report: a title, the torch version, the table."""
    if out:
        with open(out, "w") as fh:
            fh.write(f"# {title} — CPU emulation (reference twins, torch {torch.__version__})\n\n"
                     + "\n".join(md) + "\n")


SCHEMES = {
    "stock: substitution 16 + tf32 merges": stock_twin,
    "blockdoubling bf16x3 / tf32, tf32": twin("bf16x3/tf32"),
    "blockdoubling bf16x3 / bf16x3, bf16x3": twin("bf16x3"),
    "blockdoubling bf16x3 / tf32, bf16x3": twin("bf16x3/tf32+bf16x3"),
    "blockdoubling bf16x3 / bf16x3, tf32": twin("bf16x3/bf16x3+tf32"),
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
    write_md(out, "Merge precision per doubling level", md)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))

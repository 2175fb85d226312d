"""Matrix products in emulated GPU precisions.

The kernels multiply fp32 tiles on tensor cores in one of several modes. To predict their errors on a CPU,
`matmul(a, b, precision)` rounds the operands the way the hardware does and accumulates in the working
dtype (fp32 for fp32 inputs, fp64 for fp64 inputs):

- ``ieee``   : plain products in the working dtype (CUDA-core fp32 FMA).
- ``tf32``   : operands cut to TF32 (10-bit mantissa) by truncation, as the tensor core reads fp32 registers:
  Triton's tf32 dots (ours and SGLang's) pass fp32 values to ``mma.sync … .tf32`` without a ``cvt.rna.tf32.f32``
  (sm_90 PTX of Triton 3.6 and 3.8: no cvt). Truncation errs toward zero for every operand, so equal operands (the
  identical-keys family) err coherently — with round-to-nearest this emulation missed the whole forward's o
  error on the GPU (bench/precision_o.py, bench/results/2026-11-28-s13).
- ``tf32r``  : operands rounded to TF32 to nearest (ties away, as ``cvt.rna.tf32.f32``) before the tensor core —
  our kernels' opt-in for unbiased tf32 products (the same tensor-core pass plus a rounding per operand element).
- ``bf16``   : operands rounded to bf16 (7-bit mantissa, round-to-nearest-even).
- ``fp16``   : operands rounded to fp16 (10-bit mantissa, max 65504: larger values become inf).
- ``tf32x3`` / ``bf16x3`` : split precision, x = hi + lo with hi = round(x), lo = round(x − hi);
  a·b ≈ hi·hi + hi·lo + lo·hi (three tensor-core products, ~fp32 accuracy; lo·lo dropped). tf32x3 as Triton
  splits: hi by ``cvt.rna.tf32.f32`` (nearest, ties away), lo truncated by the tensor core; bf16x3 by
  round-to-nearest-even conversions (the kernels' ``.to(bf16)``).
"""

from __future__ import annotations

import torch

PRECISIONS = ("ieee", "tf32", "tf32r", "bf16", "fp16", "tf32x3", "bf16x3")


def merge_levels(merge: str) -> tuple[str, str]:
    """(16 → 32 merge precision, 32 → 64 merge precision) of a merge name ("P" or "P16+P32"); a level may be
    "P1*P2" (see :func:`product_pair`)."""
    m16, _, m32 = merge.partition("+")
    return m16, m32 or m16


def parse_precision(precision: str) -> tuple[str, str]:
    """(diag, merge) of a kernel precision — "P", "DIAG/MERGE" or "DIAG/M16+M32" with M32 optionally "Pin*Pout"
    (:func:`merge_levels`, :func:`product_pair`) — checked; the one parser of this grammar (the CLI flag's
    validator and the kernels' launch both use it). ValueError names what is wrong."""
    diag, _, merge = precision.partition("/")
    merge = merge or diag
    parts = merge.split("+")

    def bad(detail: str):
        return ValueError(f"unknown precision {precision!r}: {detail}; choose from {', '.join(PRECISIONS)} or "
                          "'DIAG/MERGE' (MERGE may be 'M16+M32', M32 may be 'Pin*Pout')")

    if "*" in diag or "*" in parts[0]:
        raise bad("a split product precision 'Pin*Pout' is for the 32 → 64 merges only ('DIAG/M16+Pin*Pout')")
    if diag not in PRECISIONS:
        raise bad(f"{diag!r} is not a precision")
    if len(parts) > 2:
        raise bad("at most two merge levels, 'DIAG/M16+M32'")
    for name in (*parts[:-1], *parts[-1].split("*", 1)):
        if name not in PRECISIONS:
            raise bad(f"{name!r} is not a precision")
    return diag, merge


def product_pair(level: str) -> tuple[str, str]:
    """(inner, outer) precision of a doubling merge X21 = −X22·(A21·X11): "P" for both products, "P1*P2" for the
    inner A21·X11 in P1 and the outer X22·(…) in P2. Why split: with (nearly) equal keys, w = Ai·diag(β e^g)·K adds
    Ai's absolute errors row by row, and the cancelling inner product is where tf32 leaves them
    (bench/precision_w.py)."""
    inner, _, outer = level.partition("*")
    return inner, outer or inner


def round_tf32(x: torch.Tensor, mode: str = "trunc") -> torch.Tensor:
    """fp32 to TF32 (keep 10 mantissa bits): ``"trunc"`` drops the 13 low bits (the tensor core reading an fp32
    register as tf32), ``"rna"`` rounds to nearest, ties away from zero (``cvt.rna.tf32.f32``)."""
    if mode not in ("trunc", "rna"):
        raise ValueError(f"unknown tf32 rounding {mode!r}")
    x32 = x.to(torch.float32)
    bits = x32.view(torch.int32)
    # rna: add half an ulp of the 10-bit mantissa to the magnitude bits; then clear the 13 dropped bits
    rounded = (((bits + 0x1000) if mode == "rna" else bits) & ~0x1FFF).view(torch.float32)
    finite = torch.isfinite(x32)
    return torch.where(finite, rounded, x32).to(x.dtype)


def round_to(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """Round ``x`` to the number format ``fmt`` (tf32, bf16, fp16) and back to x's dtype."""
    if fmt == "tf32":
        return round_tf32(x)
    if fmt == "tf32r":
        return round_tf32(x, "rna")
    if fmt == "bf16":
        return x.to(torch.bfloat16).to(x.dtype)
    if fmt == "fp16":
        return x.to(torch.float16).to(x.dtype)
    raise ValueError(f"unknown number format {fmt!r}")


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp64 stays fp64 (the reference); everything else computes in fp32 as the kernels do."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def matmul(a: torch.Tensor, b: torch.Tensor, precision: str = "ieee") -> torch.Tensor:
    """``a @ b`` with the operands rounded as the GPU's dot of that ``precision`` would round them."""
    if precision == "ieee":
        return a @ b
    if precision in ("tf32", "tf32r", "bf16", "fp16"):
        return round_to(a, precision) @ round_to(b, precision)
    if precision in ("tf32x3", "bf16x3"):
        a_hi, a_lo, b_hi, b_lo = _split(a, b, precision[:-2])
        return a_hi @ b_hi + (a_hi @ b_lo + a_lo @ b_hi)
    raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")


def _split(a, b, fmt):
    """hi/lo parts of both operands as the kernels split them (tf32: hi by cvt.rna, lo as the tensor core
    truncates it; bf16: round-to-nearest-even both)."""
    if fmt == "tf32":
        a_hi, b_hi = round_tf32(a, "rna"), round_tf32(b, "rna")
    else:
        a_hi, b_hi = round_to(a, fmt), round_to(b, fmt)
    return a_hi, round_to(a - a_hi, fmt), b_hi, round_to(b - b_hi, fmt)


def mul(a: torch.Tensor, b: torch.Tensor, precision: str = "ieee") -> torch.Tensor:
    """Elementwise/broadcast product with the same operand rounding (for rank-1 updates)."""
    if precision == "ieee":
        return a * b
    if precision in ("tf32", "tf32r", "bf16", "fp16"):
        return round_to(a, precision) * round_to(b, precision)
    if precision in ("tf32x3", "bf16x3"):
        a_hi, a_lo, b_hi, b_lo = _split(a, b, precision[:-2])
        return a_hi * b_hi + (a_hi * b_lo + a_lo * b_hi)
    raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")

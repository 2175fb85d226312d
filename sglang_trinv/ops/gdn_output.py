"""The GDN output stage without the memset of o: SGLang's ``chunk_fwd_o`` allocates ``o = torch.zeros_like(v)``
although its kernel (``chunk_fwd_kernel_o``) writes every row of every chunk it is given; only rows past the last
sequence (``cu_seqlens[-1] < T``: padding) keep the zeros. :func:`gdn_fwd_o` launches the same SGLang kernel into
``torch.empty_like(v)`` and zeroes just those tail rows on the device (the end is read there: no host sync), so
the output is stock's bit for bit and a whole memset of o (64 MiB at T=8192 H=32) is saved.

Outside the inversion: the plugin's fused pipeline uses it where the stock ``chunk_fwd_o`` still has the shape
checked by ``plugin.gdn.fwd_o_check``; benchmarks report it apart from the inversion's gain.
"""

from __future__ import annotations

import sys
from importlib import import_module

import torch
import triton
import triton.language as tl

from ._host import cdiv, next_pow2

CHUNK_O = "sglang.kernels.ops.attention.fla.chunk_o"
# What gdn_fwd_o mirrors of SGLang's chunk_fwd_o (0.5.17–0.5.23), checked against the installed source by
# plugin.gdn.fwd_o_check before the plugin uses it: the kernel's parameters, its launch constants (this module
# launches with them) and, in the wrapper's source without whitespace, the block size, grid and zero-filled o.
KERNEL_PARAMS = ("q", "k", "v", "h", "g", "o", "cu_seqlens", "chunk_indices", "scale", "T", "H", "Hg", "K", "V", "BT",
                 "BK", "BV", "USE_G", "IS_VARLEN")
LAUNCH = dict(BK=128, BV=64, num_warps=4, num_stages=2)
SOURCE = ("BT=min(chunk_size,max(16,triton.next_power_of_2(T)))", "o=torch.zeros_like(v)",
          'return(triton.cdiv(V,meta["BV"]),NT,B*H)', "BK={BK},BV={BV},".format(**LAUNCH),
          "num_warps={num_warps},num_stages={num_stages},".format(**LAUNCH),
          "USE_G=gisnotNone,IS_VARLEN=cu_seqlensisnotNone,")


@triton.jit
def zero_tail_kernel(o, cu_seqlens, N, T, ROW: tl.constexpr, BT: tl.constexpr, BR: tl.constexpr):
    """Zero rows [cu_seqlens[N], T) of o viewed as [T, ROW]; program i owns rows [i·BT, (i+1)·BT)."""
    i = tl.program_id(0)
    end = tl.load(cu_seqlens + N).to(tl.int32)
    if (i + 1) * BT > end:  # most programs: every row of theirs belongs to a sequence
        rows = i * BT + tl.arange(0, BT)
        keep = (rows >= end) & (rows < T)
        zero = tl.zeros((BT, BR), dtype=o.dtype.element_ty)
        for c in range(0, ROW, BR):
            cols = c + tl.arange(0, BR)
            tl.store(o + rows[:, None].to(tl.int64) * ROW + cols[None, :], zero,
                     mask=keep[:, None] & (cols[None, :] < ROW))


def zero_tail(o: torch.Tensor, cu_seqlens: torch.Tensor) -> None:
    """Rows of ``o`` [1, T, …] at or past ``cu_seqlens[-1]`` set to 0, decided on the device."""
    T = o.shape[1]
    row = o[0, 0].numel()
    BT = 16
    zero_tail_kernel[(cdiv(T, BT),)](o, cu_seqlens, cu_seqlens.shape[0] - 1, T, ROW=row, BT=BT,
                                     BR=min(256, next_pow2(row)))


def gdn_fwd_o(q, k, v, h, g, scale, cu_seqlens=None, chunk_indices=None, chunk_size: int = 64,
              out: torch.Tensor | None = None, launch: dict | None = None) -> torch.Tensor:
    """SGLang's ``chunk_fwd_o`` (same kernel, same launch parameters) with ``o`` not memset: rows past the last
    sequence are zeroed on the device instead. ``chunk_indices``: the forward's precomputed ones, if any;
    ``out``: a contiguous tensor shaped like v to write o into (e.g. a time slice of a larger o); ``launch``: other
    launch constants than stock's LAUNCH (BK, BV, num_warps, num_stages; benchmarks)."""
    launch = LAUNCH if launch is None else launch
    mod = sys.modules.get(CHUNK_O) or import_module(CHUNK_O)
    B, T, Hg, K, V = *q.shape, v.shape[-1]
    H = v.shape[-2]
    BT = min(chunk_size, max(16, next_pow2(T)))
    if cu_seqlens is not None and (chunk_indices is None or BT != chunk_size):
        chunk_indices = mod.prepare_chunk_indices(cu_seqlens, BT)
    NT = cdiv(T, BT) if cu_seqlens is None else len(chunk_indices)
    if scale is None:
        scale = k.shape[-1] ** -0.5
    if out is not None and (out.shape != v.shape or out.dtype != v.dtype or not out.is_contiguous()):
        raise ValueError(f"out{tuple(out.shape)} {out.dtype} must be contiguous and shaped like v{tuple(v.shape)}")
    o = torch.empty_like(v) if out is None else out
    if cu_seqlens is not None:
        if B != 1:
            raise ValueError(f"varlen inputs (cu_seqlens) need batch size 1, got B={B}")
        zero_tail(o, cu_seqlens)
    mod.chunk_fwd_kernel_o[(cdiv(V, launch["BV"]), NT, B * H)](
        q, k, v, h, g, o, cu_seqlens, chunk_indices, scale, T=T, H=H, Hg=Hg, K=K, V=V, BT=BT,
        USE_G=g is not None, IS_VARLEN=cu_seqlens is not None, **launch)
    return o

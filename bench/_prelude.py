"""The shared start of the newer bench/ scripts, imported before torch or any kernel module: the checkout on
sys.path, and for ``--smoke`` the Triton interpreter switched on (it must be before Triton is imported)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SMOKE = "--smoke" in sys.argv
if SMOKE:
    from sglang_trinv.testing import enable_interpreter

    enable_interpreter()


def out_dir() -> str:
    """The script's output folder (its first argument), created."""
    os.makedirs(sys.argv[1], exist_ok=True)
    return sys.argv[1]


def kernels_bench():
    """``sglang_trinv.benchmarks.kernels`` (inputs, timers, stock launches), on the CPU for ``--smoke``."""
    from sglang_trinv.benchmarks import kernels as bk

    if SMOKE:
        bk.DEV = "cpu"
    return bk


SMOKE_SHAPES = ((130, 2, 1, 1), (130, 2, 1, 3))  # (T, H, Hg, sequences): one partial chunk, varlen with 3


def shapes(env: str, default: str, smoke=SMOKE_SHAPES) -> tuple:
    """The (T, H, Hg, sequences) shapes of the environment variable ``env`` ("T,H,Hg,nseq;…", else ``default``);
    ``smoke`` for --smoke."""
    if SMOKE:
        return smoke
    raw = os.environ.get(env, default)
    return tuple(tuple(int(x) for x in s.split(",")) for s in raw.split(";") if s)


def state_inputs(bk, T: int, H: int, Hg: int, nseq: int, D: int) -> dict:
    """The inputs of SGLang's state and output stages as the plugin's forward has them: k, w, u, the cumulative gate
    g from our fused pipeline, a query, a random initial state h0 with its slot indices, the varlen cu / ci."""
    import torch
    import torch.nn.functional as F

    from sglang_trinv import ops

    inp = bk.make_inputs(T, H, Hg, D, D, nseq, 0)
    k, cu = inp["k"], inp["cu_seqlens"]
    ci = None if cu is None else ops.prepare_chunk_indices(cu, 64)
    g, w, u, _ = ops.gdn_cumsum_fwd_intra(k, inp["v"], inp["g_raw"], inp["beta"], cu, ci)
    gen = torch.Generator(device=bk.DEV).manual_seed(1)
    q = F.normalize(torch.randn(1, T, Hg, D, device=bk.DEV, generator=gen), dim=-1).to(k.dtype)
    N = 1 if cu is None else len(cu) - 1
    h0 = torch.randn(N, H, D, D, device=bk.DEV, generator=gen) * 0.1
    return dict(k=k, w=w, u=u, g=g, q=q, h0=h0, idx=torch.arange(N, device=bk.DEV), cu=cu, ci=ci)


def shape_table(rows: list, shapes_: tuple, first: str, key: str, cell) -> list:
    """Markdown lines: one row per distinct ``row[key]`` (in order), one column per shape, ``cell(row)`` (or "—")."""
    heads = [f"T={T} H={H} seqs={n}" for T, H, _, n in shapes_]
    lines = [f"| {first} | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for name in dict.fromkeys(r[key] for r in rows):
        cells = []
        for T, H, _, n in shapes_:
            r = next((x for x in rows if (x["T"], x["H"], x["nseq"], x[key]) == (T, H, n, name)), None)
            cells.append("—" if r is None else cell(r))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines

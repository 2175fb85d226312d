"""How far from the memory roofline the kernels run, and how far any kernel could go: per shape, the bytes the
intra kernel must move (read k, v; write w, u and A, bf16) and the fused KKᵀ + inverse must move (read k, write
A), moved by a kernel that does nothing else — same tiles, same layouts — timed in one process beside SGLang's
stock kernels and ours (CUDA-graph replays, the GPU time alone).

    traffic  best time of the traffic-only kernel over its launch configurations (``traffic_kernel``)
    copy     ``dst.copy_(src)`` of half the bytes (read + write = the same total: the brief's "plain copy")
    bound    stock / traffic — the largest speed-up over stock that a kernel moving these bytes at the traffic
             kernel's rate can have; a target above it is out of reach on that GPU
    of roof  traffic / ours — the fraction of the roofline our kernel reaches

Every timed kernel's output is checked: stock and ours against the fp64 twin (w/u/A max-rel, next to each time),
the traffic kernel against what it copies (exactly).

    sglang-trinv bench roofline --out DIR               # GPU: DIR/roofline.json + roofline.md (+ .png)
    sglang-trinv bench roofline --out DIR --smoke       # CPU, Triton interpreter, tiny shapes (checks the script)
"""

from __future__ import annotations

import argparse
import os

import torch
import triton
import triton.language as tl

from .. import ops
from ..reference import gdn as ref
from . import common
from . import kernels as bk

SHAPES = [(T, H, Hg, n) for T in (8192, 32768, 4096) for H, Hg in ((32, 16), (8, 4)) for n in (1, 8)]
SMOKE_SHAPES = [(150, 4, 2, 1), (150, 4, 2, 3)]
# (heads per program: 1 or the GQA group, num_warps) tried for the traffic kernel; the fastest counts
CONFIGS = [(1, 4), (1, 8), ("group", 4), ("group", 8)]


@triton.jit
def traffic_kernel(k, v, w, u, A, T, H: tl.constexpr, Hg: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                   HPP: tl.constexpr, WU: tl.constexpr):
    """One 64-row chunk of HPP consecutive heads per program, nothing computed: reads the key tile (once per
    program) and, with WU, the value tiles; writes A = even + odd key columns ([64, 64], so every key byte is
    read) and, with WU, w = k and u = v. The grid runs heads fastest (program_id(0)), so the heads sharing a
    key tile run side by side and re-read it from L2, as the real kernels do."""
    i_hb, i_t = tl.program_id(0), tl.program_id(1)
    rows = i_t * 64 + tl.arange(0, 64)
    rm = (rows < T)[:, None]
    r64 = rows.to(tl.int64)[:, None]
    ck = tl.arange(0, K)[None, :]
    ca = tl.arange(0, K // 2)[None, :]
    for j in tl.static_range(HPP):
        i_h = i_hb * HPP + j
        if j == 0 or (i_h % (H // Hg)) == 0:  # a new key head: load its tile
            kt = tl.load(k + r64 * (Hg * K) + (i_h // (H // Hg)) * K + ck, mask=rm, other=0.0)
            even, odd = tl.split(tl.reshape(kt, [64, K // 2, 2]))
            a = (even + odd).to(A.dtype.element_ty)
        tl.store(A + r64 * (H * (K // 2)) + i_h * (K // 2) + ca, a, mask=rm)
        if WU:
            tl.store(w + r64 * (H * K) + i_h * K + ck, kt, mask=rm)
            cv = tl.arange(0, V)[None, :]
            tl.store(u + r64 * (H * V) + i_h * V + cv, tl.load(v + r64 * (H * V) + i_h * V + cv, mask=rm), mask=rm)


def traffic(k, v, w, u, A, hpp: int, num_warps: int, wu: bool = True) -> None:
    """Launch the traffic kernel: k [1, T, Hg, K], v/u [1, T, H, V], w [1, T, H, K], A [1, T, H, K/2]."""
    _, T, Hg, K = k.shape
    H, V = v.shape[-2], v.shape[-1]
    traffic_kernel[(H // hpp, triton.cdiv(T, 64))](k, v, w, u, A, T, H=H, Hg=Hg, K=K, V=V, HPP=hpp, WU=wu,
                                                  num_warps=num_warps)


def traffic_expected(k, v):
    """What the traffic kernel writes: (w, u, A) in fp32."""
    G = v.shape[-2] // k.shape[-2]
    kh = k.float().repeat_interleave(G, dim=2)
    return kh, v.float(), kh[..., 0::2] + kh[..., 1::2]


def run_shape(T, H, Hg, nseq, D, rows):
    inp = bk.make_inputs(T, H, Hg, D, D, nseq, 0)
    k, v, g, beta, cu = inp["k"], inp["v"], inp["g"], inp["beta"], inp["cu_seqlens"]
    ci = ops.prepare_chunk_indices(cu, 64) if cu is not None else None
    G = H // Hg
    itemsize = k.element_size()
    # (A is K/2 = 64 columns wide at the benchmark's K = 128, as the kernels' [T, H, 64]; the smoke run's K = 16
    # only checks the script)
    n_intra = (k.numel() + v.numel() + T * H * (D + D + D // 2)) * itemsize  # read k, v; write w, u, A
    n_inv = (k.numel() + T * H * D // 2) * itemsize  # read k, write A
    row = dict(T=T, H=H, Hg=Hg, nseq=nseq, MB_intra=n_intra / 1e6, MB_inverse=n_inv / 1e6, us={}, err={})

    # --- traffic-only kernels, checked exactly, best configuration counts
    w, u, A = torch.empty(1, T, H, D, dtype=k.dtype, device=k.device), torch.empty_like(v), \
        torch.empty(1, T, H, D // 2, dtype=k.dtype, device=k.device)
    we, ue, Ae = traffic_expected(k, v)
    best = {}
    for hpp, nw in CONFIGS:
        hpp = G if hpp == "group" else hpp
        for wu in (True, False):
            for x in (w, u, A):
                x.fill_(float("nan"))
            traffic(k, v, w, u, A, hpp, nw, wu)
            ok = torch.equal(A.float(), Ae.to(A.dtype).float()) and (
                not wu or (torch.equal(w.float(), we) and torch.equal(u.float(), ue)))
            if not ok:
                raise AssertionError(f"traffic kernel wrote wrong data (HPP={hpp}, warps={nw}, wu={wu})")
            t = bk.bench(lambda: traffic(k, v, w, u, A, hpp, nw, wu))
            key = "traffic intra" if wu else "traffic inverse"
            row["us"][f"{key} hpp{hpp} w{nw}"] = t
            if key not in best or t < best[key]:
                best[key] = t
    row["us"].update(best)
    for key, nbytes in (("copy intra", n_intra), ("copy inverse", n_inv)):
        src = torch.empty(nbytes // 4, dtype=torch.bfloat16, device=k.device)
        dst = torch.empty_like(src)
        row["us"][key] = bk.bench(lambda: dst.copy_(src))

    # --- stock and ours, outputs against the fp64 twin
    if bk.DEV == "cuda":
        bk.retune_stock()
    w64, u64, A64 = ref.fwd_intra(k, v, g, beta, cu)

    def errs(res):
        return "/".join(f"{bk.rel_err(x, x64)['max_rel']:.2e}" for x, x64 in zip(res, (w64, u64, A64)))

    calls = {"stock intra": lambda: bk.stock_intra(k, v, g, beta, cu, ci),
             "stock kkt_inv": lambda: bk.stock_kkt_solve(k, g, beta, cu, ci),
             "ours kkt_inv": lambda: ops.gdn_kkt_inverse(k, g, beta, cu_seqlens=cu, chunk_indices=ci)}
    backends = ["triton"]
    if ops.gluon_reason(k, v, g, beta, "blockdoubling", None, cu) is None:
        backends.append("gluon")
    for b in backends:
        calls[f"ours intra {b}"] = lambda b=b: ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, chunk_indices=ci,
                                                                 backend=b)
    if "gluon" in backends:  # each partition of the Gluon kernel alone (timing diagnostics, outputs undefined)
        from ..ops import gluon_intra as gi

        d, m = ops.split_precision("blockdoubling", None)
        Ab = torch.empty(1, T, H, 64, dtype=k.dtype, device=k.device)
        for mode, name in ((1, "gluon inverters alone"), (2, "gluon streamers alone")):
            calls[name] = lambda mode=mode: gi.launch_intra(k, v, g, beta, w, u, Ab, None, cu, ci, diag_precision=d,
                                                            merge_precision=m, launch=gi.GluonLaunch(MODE=mode))
    for name, f in calls.items():
        res = f()
        if name.startswith("gluon"):
            row["us"][name] = bk.bench(f)
            continue
        if "kkt_inv" in name:
            row["err"][name] = f"{bk.rel_err(res, A64)['max_rel']:.2e}"
        else:
            row["err"][name] = errs(res)
        row["us"][name] = bk.bench(f)
    us = row["us"]
    row["ours intra"] = min(us[f"ours intra {b}"] for b in backends)
    row["bound intra"] = us["stock intra"] / us["traffic intra"]
    row["bound inverse"] = us["stock kkt_inv"] / us["traffic inverse"]
    rows.append(row)
    print(f"  T={T} H={H} seqs={nseq}: traffic intra {us['traffic intra']:.1f} µs (copy {us['copy intra']:.1f}), "
          f"stock {us['stock intra']:.1f}, ours {row['ours intra']:.1f} → bound {row['bound intra']:.2f}×, "
          f"ours {us['stock intra'] / row['ours intra']:.2f}×", flush=True)


def to_markdown(meta, rows) -> list[str]:
    md = common.md_header("Memory roofline of the intra and KKᵀ + inverse kernels", meta,
                          "bf16, K=V=128, µs per call over CUDA-graph replays (GPU time alone). traffic = a kernel "
                          "that only moves the kernel's bytes (best of its configurations); copy = torch copy_ "
                          "of the same total bytes; bound = stock / traffic (the largest speed-up over stock any "
                          "kernel moving these bytes at that rate can have); of roof = traffic / ours. Errors "
                          "max|X − X64| / max|X64| vs the fp64 twin (w/u/A).")
    md += ["## Intra (KKᵀ + inverse + w/u, A written)", "",
           "| T | H/Hg | seqs | MB | traffic | copy | stock | ours (best) | stock / ours | bound | of roof | "
           "Gluon inverters / streamers alone | err w/u/A stock → ours |", "|" + "---|" * 13]
    for r in rows:
        us = r["us"]
        best = min((b for b in ("gluon", "triton") if f"ours intra {b}" in us), key=lambda b: us[f"ours intra {b}"])
        parts = (f"{us['gluon inverters alone']:.1f} / {us['gluon streamers alone']:.1f}"
                 if "gluon streamers alone" in us else "–")
        md.append(f"| {r['T']} | {r['H']}/{r['Hg']} | {r['nseq']} | {r['MB_intra']:.0f} | {us['traffic intra']:.1f} | "
                  f"{us['copy intra']:.1f} | {us['stock intra']:.1f} | {r['ours intra']:.1f} ({best}) | "
                  f"{us['stock intra'] / r['ours intra']:.2f}× | {r['bound intra']:.2f}× | "
                  f"{us['traffic intra'] / r['ours intra']:.0%} | {parts} | "
                  f"{r['err']['stock intra']} → {r['err'][f'ours intra {best}']} |")
    md += ["", "## Fused KKᵀ + inverse (A written)", "",
           "| T | H/Hg | seqs | MB | traffic | copy | stock | ours | stock / ours | bound | of roof | "
           "err A stock → ours |", "|" + "---|" * 12]
    for r in rows:
        us = r["us"]
        md.append(f"| {r['T']} | {r['H']}/{r['Hg']} | {r['nseq']} | {r['MB_inverse']:.0f} | "
                  f"{us['traffic inverse']:.1f} | {us['copy inverse']:.1f} | {us['stock kkt_inv']:.1f} | "
                  f"{us['ours kkt_inv']:.1f} | {us['stock kkt_inv'] / us['ours kkt_inv']:.2f}× | "
                  f"{r['bound inverse']:.2f}× | {us['traffic inverse'] / us['ours kkt_inv']:.0%} | "
                  f"{r['err']['stock kkt_inv']} → {r['err']['ours kkt_inv']} |")
    md += ["", "Traffic kernel configurations (µs; hpp = heads per program, w = warps):", ""]
    for r in rows:
        cfg = {k: v for k, v in r["us"].items() if " hpp" in k}
        md.append(f"- T={r['T']} H={r['H']} seqs={r['nseq']}: " + ", ".join(f"{k} {v:.1f}" for k, v in cfg.items()))
    return md


def plot(meta, rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['T']}/{r['H']}/{r['nseq']}" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.bar([i - 0.2 for i in x], [r["bound intra"] for r in rows], 0.4, label="bound: stock / traffic")
    ax.bar([i + 0.2 for i in x], [r["us"]["stock intra"] / r["ours intra"] for r in rows], 0.4, label="ours")
    ax.axhline(1.8, color="k", ls="--", lw=1, label="1.8× target")
    ax.set_xticks(list(x), labels, rotation=45, ha="right")
    ax.set_xlabel("T / H / sequences")
    ax.set_ylabel("speed-up over stock (intra)")
    ax.set_title(f"Intra vs its memory roofline — {meta['gpu']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", default="bench/results/latest")
    ap.add_argument("--smoke", action="store_true", help="CPU + Triton interpreter, tiny shapes (checks the script)")
    ap.add_argument("--shape", action="append", type=common.shape_arg, default=None, metavar="T,H,Hg,SEQS",
                    help="only these shapes (repeatable; default: the 12 benchmark shapes)")


def run(args) -> int:
    if args.smoke:
        bk.DEV = "cpu"
    D = 16 if args.smoke else 128
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    if args.shape:
        shapes = args.shape
    if bk.DEV == "cuda":
        meta, rows = common.gpu_rows(args.out, shapes, lambda T, H, Hg, n, rows: run_shape(T, H, Hg, n, D, rows))
    else:
        meta, rows = common.run_meta("cpu"), []
        os.makedirs(args.out, exist_ok=True)
        for sh in shapes:
            run_shape(*sh, D, rows)
    common.try_plot(plot, meta, rows, os.path.join(args.out, "roofline.png"))
    return common.write_report(args.out, "roofline", meta, rows, to_markdown(meta, rows))


def main(argv=None) -> int:
    return common.cli_main(__doc__, add_arguments, run, argv, prog="sglang-trinv bench roofline")

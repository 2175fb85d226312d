"""A/B benchmark on one GPU, in one run: SGLang's stock GDN kernels vs ours (every method), FLA's solve_tril,
and the whole SGLang ``chunk_gated_delta_rule_fwd`` with stock vs our intra kernel swapped in.

Every time is a median of ``triton.testing.do_bench``; next to it, the error of that kernel's output against
an fp64 reference built from the same (bf16) inputs:  ``max_rel = max|X − X64| / max|X64|``.

    sglang-trinv bench kernels --out DIR [--quick] [--tune] [--smoke]
    python bench/bench_kernels.py …          (the same, from a checkout)

Writes ``DIR/kernels.json`` and ``DIR/kernels.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if "--smoke" in sys.argv:  # the interpreter must be on before Triton (and any kernel) is imported
    from sglang_trinv.testing import enable_interpreter

    enable_interpreter()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402


from sglang_trinv import ops  # noqa: E402
from sglang_trinv.benchmarks import common  # noqa: E402
from sglang_trinv.reference import gdn as ref  # noqa: E402

FLA = "sglang.kernels.ops.attention.fla"
DEV = "cuda"  # --smoke: "cpu" under the Triton interpreter, tiny shapes, to check this script without a GPU
K_DIM = 128


# ------------------------------------------------------------------------------------------ inputs
def chunk_cumsum(g_raw, cu_seqlens=None):
    """SGLang's chunk-local cumsum of the raw log-gate (64-token chunks of each sequence), fp32."""
    from importlib import import_module

    return import_module(f"{FLA}.cumsum").chunk_local_cumsum(g_raw, chunk_size=64, cu_seqlens=cu_seqlens)


def make_inputs(T, H, Hg, K, V, nseq, seed, dtype=None, family="random"):
    """Inputs as a Qwen3-Next GDN layer produces them: l2-normalised keys, β = sigmoid, g ≤ 0 log-decay."""
    dtype = dtype or (torch.bfloat16 if DEV == "cuda" else torch.float32)
    gen = torch.Generator(device=DEV).manual_seed(seed)
    dev = DEV
    k = F.normalize(torch.randn(1, T, Hg, K, device=dev, generator=gen), dim=-1)
    beta = torch.sigmoid(torch.randn(1, T, H, device=dev, generator=gen))
    g_raw = -F.softplus(torch.randn(1, T, H, device=dev, generator=gen) - 3.0)  # mild decay, ~ −0.05
    if family == "identical_keys":  # every token of a chunk has the same key: binomial growth for Neumann
        k = k[:, ::64].repeat_interleave(64, dim=1)[:, :T].contiguous()
        beta = torch.full_like(beta, 0.999)
        g_raw = torch.zeros_like(g_raw)
    elif family == "beta_1_2":  # negative-eigenvalue DeltaNet: β ∈ (1, 2], correlated keys
        base = F.normalize(torch.randn(1, 1, Hg, K, device=dev, generator=gen), dim=-1)
        k = F.normalize(base + 0.1 * k, dim=-1)
        beta = 1 + torch.rand(1, T, H, device=dev, generator=gen)
        g_raw = torch.zeros_like(g_raw)
    v = torch.randn(1, T, H, V, device=dev, generator=gen)
    cu = None
    if nseq > 1:  # varlen: random lengths with partial chunks, one of them 1 token long
        cuts = torch.sort(torch.randperm(T - 2, generator=torch.Generator().manual_seed(seed))[: nseq - 2] + 1)[0]
        cu = torch.cat([torch.tensor([0, 1]), cuts + 1, torch.tensor([T])]).unique().to(dev, torch.int64)
    g = chunk_cumsum(g_raw, cu)
    return dict(k=k.to(dtype), v=v.to(dtype), g=g, beta=beta.to(dtype), cu_seqlens=cu, g_raw=g_raw)


# ------------------------------------------------------------------------------------------ kernels
def stock_kkt_solve(k, g, beta, cu_seqlens, chunk_indices):
    """SGLang's fused KKᵀ + solve kernel alone (first half of its chunk_gated_delta_rule_fwd_intra)."""
    from importlib import import_module

    mod = import_module(f"{FLA}.chunk_fwd")
    B, T, Hg, K = k.shape
    H = beta.shape[-1]
    NT = triton.cdiv(T, 64) if cu_seqlens is None else len(chunk_indices)
    A = torch.zeros(B, T, H, 64, device=k.device, dtype=k.dtype)
    mod.chunk_gated_delta_rule_fwd_kkt_solve_kernel[(NT, B * H)](
        k=k, g=g, beta=beta, A=A, cu_seqlens=cu_seqlens, chunk_indices=chunk_indices, T=T, H=H, Hg=Hg, K=K,
        BT=64, BC=16)
    return A


def retune_stock(modules=("chunk_fwd", "wy_fast")) -> int:
    """Forget the stock kernels' autotune choices (in memory and on disk) so the next call tunes at its own shape.
    SGLang's kkt+solve kernel is tuned per (H, Hg, K, BC), not per T: without this a run keeps the configuration
    picked at the first T it met (e.g. T=4096) for every later T of that head count — H200, session 12: stock
    intra at T=8192 H=8 62.3 µs tuned at T=4096 vs 46.8 tuned at T=8192. Returns the autotuners reset."""
    from importlib import import_module

    from triton.runtime.autotuner import Autotuner

    n = 0
    for name in modules:
        try:
            mod = import_module(f"{FLA}.{name}")
        except ImportError:
            continue
        for obj in list(vars(mod).values()):
            while obj is not None and not isinstance(obj, Autotuner) and hasattr(obj, "fn"):
                obj = obj.fn
            if isinstance(obj, Autotuner):
                obj.cache.clear()
                obj.cache_results = False
                n += 1
    return n


def stock_intra(k, v, g, beta, cu_seqlens, chunk_indices):
    from importlib import import_module

    return import_module(f"{FLA}.chunk_fwd").chunk_gated_delta_rule_fwd_intra(
        k=k, v=v, g=g, beta=beta, cu_seqlens=cu_seqlens, chunk_indices=chunk_indices)


def fla_kkt_A(k, g, beta, cu_seqlens):
    """Strictly-lower gated A in fp32 (input of the stand-alone solve_tril), by the fp64 reference."""
    return ref.chunk_A(k, g, beta, cu_seqlens, dtype=torch.float64).float()


rel_err = common.rel_err


def bench(fn, reps=None):
    """GPU time alone (CUDA-graph replays, median µs); do_bench where a call cannot be captured (printed), one
    wall-clock call on a CPU."""
    t = common.graph_us(fn, DEV)
    return t if t is not None else common.time_us(fn, DEV, reps)


def default_label(kind: str, method: str) -> str:
    """What ``precision=None`` resolves to for a row kind: the fused intra kernels, the fused KKᵀ + inverse or the
    stand-alone solve_tril (each has its own measured default)."""
    table = {"kkt_inv": ops.INVERSE_ONLY_PRECISION, "solve": ops.SOLVE_TRIL_PRECISION}.get(kind, ops.DEFAULT_PRECISION)
    return f"default {table.get(method, '?')}"


# ------------------------------------------------------------------------------------------ runs
MAIN_METHODS = [  # every shape; None: each kernel's default (fused intra, KKᵀ + inverse and solve_tril differ)
    ("blockdoubling", None),
    ("blockdoubling", "bf16x3/tf32"),
    ("blockdoubling", "bf16x3"),
    ("blockdoubling", "tf32"),
    ("column_sweep", "tf32"),
    ("forward_substitution", "tf32"),
]
FAMILY_METHODS = MAIN_METHODS + [("hybrid", "tf32"), ("neumann", "tf32")]
METHOD_PRECISIONS = [  # all methods (one shape, --all-methods)
    ("blockdoubling", "bf16x3/tf32"),
    ("forward_substitution", "tf32"),
    ("column_sweep", "tf32"),
    ("blockdoubling", "tf32"),
    ("blockdoubling", "tf32x3/tf32"),
    ("blockdoubling", "tf32x3"),
    ("blockdoubling", "ieee"),
    ("hybrid", "tf32"),
    ("neumann", "tf32"),
    ("newton_schulz", "tf32"),
]


def run_tuning(inp, tunings, rows, mode):
    """Time blockdoubling/tf32 under each launch configuration; returns the fastest."""
    best = None
    for tu in tunings:
        try:
            if mode == "kkt":
                f = lambda: ops.gdn_kkt_inverse(inp["k"], inp["g"], inp["beta"], method="blockdoubling",
                                                precision="tf32", tuning=tu)  # noqa: E731
            else:
                f = lambda: ops.gdn_fwd_intra(inp["k"], inp["v"], inp["g"], inp["beta"], method="blockdoubling",
                                              precision="tf32", tuning=tu)  # noqa: E731
            t = bench(f)
        except Exception as e:  # a config that does not compile (e.g. out of shared memory) is reported
            rows.append(dict(kind=f"tune-{mode}", tuning=tu.__dict__, error=repr(e)[:200]))
            continue
        rows.append(dict(kind=f"tune-{mode}", tuning=tu.__dict__, us=t))
        print(f"  tune {mode} {tu}: {t:.1f} us", flush=True)
        if best is None or t < best[0]:
            best = (t, tu)
    return best[1]


def run_shape(shape, rows, tune_kkt, tune_intra, methods, with_fla, with_whole, seed=0):
    T, H, Hg, nseq = shape["T"], shape["H"], shape["Hg"], shape["nseq"]
    K = V = K_DIM
    inp = make_inputs(T, H, Hg, K, V, nseq, seed)
    k, v, g, beta, cu = inp["k"], inp["v"], inp["g"], inp["beta"], inp["cu_seqlens"]
    ci = ops.prepare_chunk_indices(cu, 64) if cu is not None else None
    tag = dict(T=T, H=H, Hg=Hg, nseq=nseq)
    w64, u64, A64 = ref.fwd_intra(k, v, g, beta, cu)
    if DEV == "cuda":
        retune_stock()  # stock's autotuner keys on the head count only: tune it at this shape

    def record(kind, name, precision, t, errs):
        precision = precision or default_label(kind, name.split(" ")[0].split("+")[0])
        row = dict(kind=kind, method=name, precision=precision, us=t, **tag, **errs)
        rows.append(row)
        print(f"  {kind:10s} {name:22s} {precision:12s} {t:8.1f} us  max_rel(A)={errs.get('max_rel', 0):.2e}"
              f"{'  NONFINITE=%d' % errs['nonfinite'] if errs.get('nonfinite') else ''}", flush=True)

    # --- fused KKᵀ + inverse
    A_stock = stock_kkt_solve(k, g, beta, cu, ci)
    t_stock = bench(lambda: stock_kkt_solve(k, g, beta, cu, ci))
    record("kkt_inv", "stock", "sglang", t_stock, rel_err(A_stock, A64))
    for m, p in methods:
        f = lambda: ops.gdn_kkt_inverse(k, g, beta, cu_seqlens=cu, chunk_indices=ci, method=m, precision=p,
                                        tuning=tune_kkt)  # noqa: E731
        record("kkt_inv", m, p, bench(f), rel_err(f(), A64))
    # --- intra: KKᵀ + inverse + w/u
    def intra_errs(w, u, A):
        """max_rel etc. of A (of w when A is not written), plus w_* and u_* of w and u, against fp64."""
        e = {f"w_{kk}": vv for kk, vv in rel_err(w, w64).items()}
        if u is not None:
            e.update({f"u_{kk}": vv for kk, vv in rel_err(u, u64).items()})
        e.update(rel_err(A, A64) if A is not None else {"max_rel": e["w_max_rel"]})
        return e

    def backends(m, p):
        """On sm_90 blockdoubling can run on the Gluon kernel (ops.gluon_reason): then both kernels are timed."""
        gluon = tune_intra is None and ops.gluon_reason(k, v, g, beta, m, p, cu) is None
        return ["gluon", "triton"] if gluon else [None]

    t = bench(lambda: stock_intra(k, v, g, beta, cu, ci))
    record("intra", "stock", "sglang", t, intra_errs(*stock_intra(k, v, g, beta, cu, ci)))
    for m, p in methods:
        for backend in backends(m, p):
            f = lambda: ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, chunk_indices=ci, method=m, precision=p,
                                          tuning=tune_intra, backend=backend)  # noqa: E731
            record("intra", m + (f" [{backend}]" if backend else ""), p, bench(f), intra_errs(*f()))
    # --- variants of the default: our KKᵀ+inverse then SGLang's w/u kernel; A not written (SGLang discards it)
    from importlib import import_module

    wu = import_module(f"{FLA}.wy_fast").recompute_w_u_fwd
    m, p = methods[0]

    def two_kernels():
        A = ops.gdn_kkt_inverse(k, g, beta, cu_seqlens=cu, chunk_indices=ci, method=m, precision=p, tuning=tune_kkt)
        w, u = wu(k=k, v=v, beta=beta, A=A, g_cumsum=g, cu_seqlens=cu, chunk_indices=ci)
        return w, u, A

    w, u, A = two_kernels()
    record("intra", f"{m}+stock_wu", p or default_label("kkt_inv", m), bench(two_kernels), intra_errs(w, None, A))
    for backend in backends(m, p):
        f = lambda: ops.gdn_fwd_intra(k, v, g, beta, cu_seqlens=cu, chunk_indices=ci, method=m, precision=p,
                                      tuning=tune_intra, store_A=False, backend=backend)  # noqa: E731
        record("intra", f"{m} (no A)" + (f" [{backend}]" if backend else ""), p, bench(f), intra_errs(*f()))
    # --- stand-alone solve_tril (fp32 A in, fp32 Ai out): FLA 0.6.0 (unless --no-fla) vs ours
    A_in = fla_kkt_A(k, g, beta, cu)
    if with_fla:
        try:
            from fla.ops.utils.solve_tril import solve_tril as fla_solve_tril

            X = fla_solve_tril(A_in, cu_seqlens=cu, output_dtype=torch.float)
            record("solve", "fla-0.6.0", "default", bench(lambda: fla_solve_tril(A_in, cu_seqlens=cu,
                                                                                   output_dtype=torch.float)),
                   rel_err(X, A64))
        except Exception as exc:  # FLA missing or failing: say so in the results
            rows.append(dict(kind="solve", method="fla-0.6.0", error=repr(exc)[:300], **tag))
            print("  FLA solve_tril failed:", repr(exc)[:300], flush=True)
    for m, p in methods[:1]:
        f = lambda: ops.solve_tril(A_in, cu_seqlens=cu, chunk_indices=ci, method=m, precision=p,
                                   tuning=tune_kkt)  # noqa: E731
        record("solve", m, p, bench(f), rel_err(f(), A64))
    # --- whole SGLang chunk_gated_delta_rule_fwd, stock vs ours swapped in
    if with_whole:
        run_whole(inp, tag, rows, tune_intra)


def run_whole(inp, tag, rows, tune_intra, precisions=()):
    """The whole chunk_gated_delta_rule_fwd, stock vs the plugin (see the variants below); ``precisions``: more
    blockdoubling precisions, each timed on the fused pipeline (both backends where Gluon can run) in the same
    process, for an A/B of precisions on the whole forward."""
    from importlib import import_module

    chunk = import_module(f"{FLA}.chunk")
    k, v, beta, cu, g_raw = inp["k"], inp["v"], inp["beta"], inp["cu_seqlens"], inp["g_raw"]
    T, H, K = k.shape[1], beta.shape[-1], k.shape[-1]
    N = 1 if cu is None else len(cu) - 1
    gen = torch.Generator(device=DEV).manual_seed(1)
    q = F.normalize(torch.randn(1, T, k.shape[2], K, device=DEV, generator=gen), dim=-1).to(k.dtype)
    h0 = torch.randn(N, H, v.shape[-1], K, device=DEV, generator=gen) * 0.1
    idx = torch.arange(N, device=DEV)
    ci = chunk.prepare_chunk_indices(cu, 64) if cu is not None else None
    import sglang_trinv

    def run(state):
        return chunk.chunk_gated_delta_rule_fwd(q=q, k=k, v=v, g=g_raw, beta=beta, scale=K ** -0.5,
                                                initial_state=state, initial_state_indices=idx, cu_seqlens=cu,
                                                chunk_indices=ci, inplace_update=True)

    # the fp64 twin of the whole forward (exact inverse): every row's error is measured against it
    from sglang_trinv.reference import gdn as gdn_ref

    o64, s64 = gdn_ref.chunk_fwd(q, k, v, g_raw, beta, K ** -0.5, h0, cu)
    results = {}
    # through the plugin, exactly as a server with --linear-attn-inv METHOD runs it (fused pipeline: cumsum in
    # our kernel, A not written); "intra only" swaps just the intra kernel (SGLANG_TRINV_FUSE_PIPELINE=0)
    from sglang_trinv.plugin._state import ENV_FUSE_PIPELINE

    # the last field: SGLANG_TRINV_GLUON for the call ("1": the Gluon kernel, "0": the Triton one). Where the
    # Gluon kernel can run, blockdoubling is timed on both (same process, same inputs; the label says which one
    # `auto` picks: ops.gluon_auto_reason), so the eager A/B decides ops.GLUON_MIN_TILES
    can = ops.gluon_reason(k, v, inp["g"], beta, "blockdoubling", None, cu) is None
    auto = {fused: "1" if can and ops.gluon_auto_reason(k, beta, cu, fused) is None else "0"
            for fused in (True, False)}
    # the fifth field: the output stage without the memset of o (ops.gdn_fwd_o; the plugin's fused pipeline uses
    # it by default). "stock, o not memset" is stock with only that change: the baseline of the inversion's share
    # the sixth: SGLANG_TRINV_STATE_LAUNCH ("tuned", the plugin's default since s26: SGLang's state kernel from
    # ops.gdn_state's copy at launch constants tuned per shape; "sglang": its own, as before)
    variants = [("stock", None, True, "auto", True, "tuned"), ("stock", None, True, "auto", False, "tuned")]
    for fused in (True, False):
        variants += [("blockdoubling", None, fused, e, not fused, "tuned")
                     for e in (("1", "0") if can else ("auto",))]
    variants.append(("blockdoubling", None, True, auto[True], True, "tuned"))
    variants.append(("blockdoubling", None, True, auto[True], False, "sglang"))
    variants.append(("column_sweep", None, True, "auto", False, "tuned"))
    for p in precisions:
        can_p = ops.gluon_reason(k, v, inp["g"], beta, "blockdoubling", p, cu) is None
        variants += [("blockdoubling", p, True, e, False, "tuned") for e in (("1", "0") if can_p else ("0",))]
    from sglang_trinv.plugin.gdn import ENV_O_MEMSET, ENV_STATE_LAUNCH

    stock_fwd_o = chunk.chunk_fwd_o

    def fwd_o_no_memset(q, k, v, h, g=None, scale=None, cu_seqlens=None, chunk_size=64):
        return ops.gdn_fwd_o(q, k, v, h, g, scale, cu_seqlens=cu_seqlens, chunk_indices=ci, chunk_size=chunk_size)

    for name, p, fused, gl_env, memset, state_launch in variants:
        with common.env_var(ENV_FUSE_PIPELINE, "1" if fused else "0"), common.env_var(ops.ENV_GLUON, gl_env), \
                common.env_var(ENV_O_MEMSET, "1" if memset else "0"), \
                common.env_var(ENV_STATE_LAUNCH, state_launch):
            sglang_trinv.patch(method=name, precision=p) if name != "stock" else sglang_trinv.unpatch()
            if name == "stock" and not memset:
                chunk.chunk_fwd_o = fwd_o_no_memset
            try:
                state = h0.clone()
                out = run(state)
                o = out[1].float()
                results.setdefault((name, p), (o, state.clone()))
                scratch = h0.clone()  # updated in place by every timed call; values do not affect the time
                t = bench(lambda: run(scratch))  # eager, as SGLang runs GDN prefill: host launches included
                t_graph = common.graph_us(lambda: run(scratch), DEV)  # GPU time alone
            finally:
                chunk.chunk_fwd_o = stock_fwd_o
                sglang_trinv.unpatch()
        o0, s0 = results[("stock", None)]
        d_o = float((o - o0).abs().max() / o0.abs().max())
        d_s = float((state - s0).abs().max() / s0.abs().max())
        e_o = float((o.double() - o64).abs().max() / o64.abs().max())
        e_s = float((state.double() - s64).abs().max() / s64.abs().max())
        pipeline = "" if name == "stock" else (" fused pipeline" if fused else " intra only")
        if name == "blockdoubling" and can:
            pipeline += " [triton]" if gl_env == "0" else " [gluon]"
        if fused and name != "stock" and memset:
            pipeline += ", o memset kept"
        elif fused and name != "stock" and state_launch == "sglang":
            pipeline += ", SGLang's state launch"
        if name == "stock" and not memset:
            pipeline = " o not memset"
        label = p or ("sglang" if name == "stock" else f"default {ops.DEFAULT_PRECISION[name]}")
        # the kernel `auto` serves this call with, as the plugin runs it by default
        picked = gl_env in ("auto", auto[fused]) and memset == (name == "stock" or not fused) and p is None \
            and state_launch == "tuned"
        rows.append(dict(kind="gdn_fwd", method=name, precision=label + ("," + pipeline if pipeline else ""), us=t,
                         graph_us=t_graph, o_rel_vs_stock=d_o, state_rel_vs_stock=d_s, o_rel_vs_fp64=e_o,
                         state_rel_vs_fp64=e_s, o_memset=memset,
                         # the state kernel that ran: ours at the tuned launch only on the fused pipeline without
                         # the memset (plugin.gdn.state_stage), else SGLang's own
                         state_launch=state_launch if fused and name != "stock" and not memset else "sglang",
                         pipeline=pipeline.strip() or "stock", auto_pick=picked, **tag))
        g_txt = f" (graph {t_graph:.1f})" if t_graph else ""
        print(f"  gdn_fwd    {name + pipeline:36s} {str(p):12s} {t:8.1f} us{g_txt}{' (auto)' if picked else ''}  o vs fp64 "
              f"{e_o:.2e}  state vs fp64 {e_s:.2e}  o vs stock {d_o:.2e}  state vs stock {d_s:.2e}", flush=True)


def stability_on_gpu(rows, methods=FAMILY_METHODS):
    """Adversarial families on the GPU (T=4096, H=8): error and non-finite count per method vs stock."""
    for fam in ["identical_keys", "beta_1_2"]:
        inp = make_inputs(4096 if DEV == "cuda" else 128, 8, 4, K_DIM, K_DIM, 1, 3, family=fam)
        k, g, beta = inp["k"], inp["g"], inp["beta"]
        A64 = ref.chunk_inverse(k, g, beta)
        e = rel_err(stock_kkt_solve(k, g, beta, None, None), A64)
        rows.append(dict(kind="family", family=fam, method="stock", precision="sglang", **e))
        print(f"  family {fam:15s} stock {e}", flush=True)
        for m, p in methods:
            e = rel_err(ops.gdn_kkt_inverse(k, g, beta, method=m, precision=p), A64)
            e32 = rel_err(ops.gdn_kkt_inverse(k, g, beta, method=m, precision=p, output_dtype=torch.float32), A64)
            rows.append(dict(kind="family", family=fam, method=m, precision=p or default_label("kkt_inv", m), **e,
                             fp32_out_max_rel=e32["max_rel"], fp32_out_nonfinite=e32["nonfinite"]))
            print(f"  family {fam:15s} {m} {p} bf16-out {e['max_rel']:.2e} fp32-out {e32['max_rel']:.2e} "
                  f"nonfinite {e['nonfinite']}/{e32['nonfinite']}", flush=True)
        # the fused intra kernel on the Gluon backend (sm_90): its A output on the same family
        v = inp["v"]
        for m, p in [mp for mp in methods if mp[0] == "blockdoubling" and mp[1] != "tf32"]:
            if ops.gluon_reason(k, v, g, beta, m, p) is None:
                e = rel_err(ops.gdn_fwd_intra(k, v, g, beta, method=m, precision=p, backend="gluon")[2], A64)
                rows.append(dict(kind="family", family=fam, method=f"{m} [gluon intra]",
                                 precision=p or default_label("intra", m), **e))
                print(f"  family {fam:15s} {m} [gluon intra] {p} bf16-out {e['max_rel']:.2e} "
                      f"nonfinite {e['nonfinite']}", flush=True)


def to_markdown(meta, rows):
    out = [f"# Kernel benchmark — {meta['gpu']} — {meta['date']}", "",
           f"torch {meta['torch']}, triton {meta['triton']}, sglang kernels {meta['sglang']}, "
           f"FLA {meta.get('fla')}, bf16 inputs, K=V=128. Times: median µs ({meta.get('timing', 'do_bench')}; the "
           "whole forward: do_bench and 'graph', CUDA-graph replays, the GPU time alone). "
           "max_rel = max|X−X64|/max|X64| of the returned A (bf16 unless noted); whole forward: of the output o "
           "against the fp64 twin (reference.gdn.chunk_fwd; the JSON also has the final state and the "
           "difference to stock).", ""]
    for kind, title in [("kkt_inv", "Fused KKᵀ + inverse"), ("intra", "Intra: KKᵀ + inverse + w/u"),
                        ("solve", "Stand-alone solve_tril (fp32 in/out)"), ("gdn_fwd", "Whole chunk_gated_delta_rule_fwd")]:
        sel = [r for r in rows if r.get("kind") == kind and "us" in r]
        if not sel:
            continue
        out += [f"## {title}", "", "| T | H/Hg | seqs | method | precision | µs | vs stock | max_rel | nonfinite |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in sel:
            base = next((b["us"] for b in sel if b["method"] in ("stock", "fla-0.6.0") and b["T"] == r["T"]
                         and b["H"] == r["H"] and b["nseq"] == r["nseq"] and
                         (b["method"] == "stock" or kind == "solve")), None)
            ratio = f"{base / r['us']:.2f}×" if base else ""
            err = r.get("max_rel", r.get("o_rel_vs_fp64", r.get("o_rel_vs_stock")))
            us = f"{r['us']:.1f}" + (f" (graph {r['graph_us']:.1f})" if r.get("graph_us") else "")
            out.append(f"| {r['T']} | {r['H']}/{r['Hg']} | {r['nseq']} | {r['method']} | {r['precision']} | "
                       f"{us} | {ratio} | {err:.2e} | {r.get('nonfinite', '')} |")
        out.append("")
    fam = [r for r in rows if r.get("kind") == "family"]
    if fam:
        out += ["## Adversarial families (T=4096, H=8)", "", "| family | method | precision | max_rel (bf16 out) | "
                "max_rel (fp32 out) | nonfinite |", "|---|---|---|---|---|---|"]
        for r in fam:
            out.append(f"| {r['family']} | {r['method']} | {r['precision']} | {r['max_rel']:.2e} | "
                       f"{r.get('fp32_out_max_rel', float('nan')):.2e} | {r['nonfinite']} |")
    tune = [r for r in rows if r.get("kind", "").startswith("tune")]
    if tune:
        out += ["", "## Launch configurations (blockdoubling tf32, T=8192 H=32 Hg=16)", "", "| mode | config | µs |",
                "|---|---|---|"]
        for r in tune:
            out.append(f"| {r['kind']} | {r['tuning']} | {r.get('us', r.get('error'))} |")
    return "\n".join(out) + "\n"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", default="bench/results/latest")
    ap.add_argument("--quick", action="store_true", help="one shape (T=8192, H=32/16, one sequence)")
    ap.add_argument("--tune", action="store_true", help="sweep launch configurations first")
    ap.add_argument("--tune-intra", action="store_true", help="sweep one-warp w/u tilings of the fused kernel")
    ap.add_argument("--all-methods", action="store_true", help="every method and precision at T=8192 H=32/16")
    ap.add_argument("--no-fla", action="store_true")
    ap.add_argument("--no-whole", action="store_true")
    ap.add_argument("--no-families", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="CPU + Triton interpreter, tiny shapes (checks the script)")
    ap.add_argument("--shape", action="append", type=common.shape_arg, default=None, metavar="T,H,Hg,SEQS",
                    help="only these shapes (repeatable; default: the 12 benchmark shapes)")
    ap.add_argument("--methods", default=None,
                    help="comma list of METHOD:PRECISION to time (default: the main set), e.g. blockdoubling:bf16x3")


PLOT_KINDS = [("kkt_inv", "fused KKᵀ + inverse"), ("intra", "KKᵀ + inverse + w/u"), ("gdn_fwd", "whole GDN forward")]


def plot(meta, rows, path, kinds=PLOT_KINDS):
    """Speed-up over stock per shape (bars), one panel per row kind (``kinds``: (kind, title) pairs that have
    rows; also used by ``bench layer`` and ``bench kda``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def shape(r):
        return r["T"], r["H"], r["nseq"], bool(r.get("safe_gate", False))

    kinds = [(k, t) for k, t in kinds if any(r.get("kind") == k and "us" in r for r in rows)]
    n_shapes = max([len({shape(r) for r in rows if r.get("kind") == k and "us" in r}) for k, _ in kinds] or [1])
    panel_w = max(6.0, 0.8 * n_shapes + 1.5)
    n_var = max([len({(r["method"], r["precision"]) for r in rows if r.get("kind") == k and "us" in r})
                 for k, _ in kinds] or [1])
    # the legends go under the panels (inside, they covered the bars): room for two columns of labels
    fig, axes = plt.subplots(1, max(len(kinds), 1), figsize=(panel_w * max(len(kinds), 1), 4.8 + 0.09 * n_var),
                             squeeze=False)
    for ax, (kind, title) in zip(axes[0], kinds):
        sel = [r for r in rows if r.get("kind") == kind and "us" in r]
        shapes = list(dict.fromkeys(shape(r) for r in sel))
        variants = list(dict.fromkeys((r["method"], r["precision"]) for r in sel if r["method"] != "stock"))
        width = 0.8 / max(len(variants), 1)
        colors = plt.cm.tab20.colors if len(variants) > 10 else plt.cm.tab10.colors  # one colour per bar kind
        us = lambda r: r.get("graph_us") or r["us"]  # noqa: E731  (whole forward: GPU time, as the tables quote)
        for j, (m, p) in enumerate(variants):
            ys = []
            for sh in shapes:
                base = next((us(r) for r in sel if shape(r) == sh and r["method"] == "stock"), None)
                mine = next((us(r) for r in sel if shape(r) == sh and (r["method"], r["precision"]) == (m, p)), None)
                ys.append(base / mine if base and mine else 0.0)
            label = f"{m} {'plugin default' if p == 'sglang' else p}"  # runs before 2026-11-27 wrote "sglang"
            ax.bar([i + j * width for i in range(len(shapes))], ys, width, label=label, color=colors[j % len(colors)])
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(shapes))])
        ax.set_xticklabels([f"T={t}\nH={h}\n{'x' + str(n) if n > 1 else '1 seq'}{chr(10) + 'safe_gate' if sg else ''}"
                            for t, h, n, sg in shapes], fontsize=7)
        ax.set_ylabel("speed-up over SGLang stock (same run)")
        ax.set_title(title)
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    fig.suptitle(f"{meta['gpu']}, {meta['date'][:10]}: stock SGLang {meta.get('sglang')} kernels vs sglang-trinv",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> int:
    return common.cli_main(__doc__, add_arguments, run, argv)


def run(args) -> int:
    global DEV, K_DIM
    if args.smoke:
        DEV, K_DIM = "cpu", 16
    os.makedirs(args.out, exist_ok=True)

    try:
        import fla

        fla_version = getattr(fla, "__version__", "?")
    except Exception:
        fla_version = None
    meta = common.run_meta(DEV, fla=fla_version, timing="CUDA-graph replays, GPU time alone (do_bench where a call "
                           "cannot be captured)")
    print(meta, flush=True)
    rows = []
    t0 = time.time()
    tune_kkt = tune_intra = None  # None: the ops' defaults (and, for the fused intra, the backend choice)
    if args.tune:  # the full sweep (2026-11-26 H200: one warp, one head per program won)
        inp = make_inputs(8192, 32, 16, 128, 128, 1, 0)
        cands = [ops.Tuning(num_warps=nw, group=gr, BK=bk, BV=bv, num_stages=st)
                 for nw in (1, 2, 4) for gr in (1, 2) for bk, bv in ((64, 64),) for st in (1, 2)]
        cands += [ops.Tuning(num_warps=nw, group=1, BK=bk, BV=128, num_stages=2) for nw in (2, 4) for bk in (32, 128)]
        tune_kkt = run_tuning(inp, cands, rows, "kkt")
        tune_intra = run_tuning(inp, cands, rows, "intra")
    elif args.tune_intra:  # one-warp variants of the fused kernel: the default tiling under register caps
        inp = make_inputs(8192, 32, 16, 128, 128, 1, 0) if DEV == "cuda" else make_inputs(150, 4, 2, 16, 16, 1, 0)
        # (2026-11-27 H200: BK=32, BV=16/64, β-fold, 2 warps all lost to the default through spills; a cap of
        # 168/128 registers lets 12/13 programs per SM in, per the Triton 3.6 sm_90 compile)
        cands = [ops.DEFAULT_TUNING_FUSED] + [ops.Tuning(BV=32, num_stages=st, maxnreg=r)
                                              for r, st in ((168, 3), (168, 2), (144, 2), (128, 3))]
        tune_intra = run_tuning(inp, cands, rows, "intra")
        print("best kkt", tune_kkt, "best intra", tune_intra, flush=True)
    meta["tuning_kkt"] = (tune_kkt or ops.DEFAULT_TUNING).__dict__
    meta["tuning_intra"] = (tune_intra or ops.DEFAULT_TUNING_FUSED).__dict__
    shapes = [dict(T=150, H=4, Hg=2, nseq=1), dict(T=150, H=4, Hg=2, nseq=3)] if args.smoke else \
        [dict(T=8192, H=32, Hg=16, nseq=1)] if args.quick else [  # most important first
        dict(T=T, H=H, Hg=Hg, nseq=n) for T in (8192, 32768, 4096) for H, Hg in ((32, 16), (8, 4)) for n in (1, 8)]
    if args.shape:
        shapes = [dict(zip(("T", "H", "Hg", "nseq"), sh)) for sh in args.shape]
    if not args.no_families:  # first: they decide "error ≤ stock on every family"
        stability_on_gpu(rows)
    for i, sh in enumerate(shapes):
        print(f"[{i + 1}/{len(shapes)}] {sh}  ({time.time() - t0:.0f}s)", flush=True)
        methods = METHOD_PRECISIONS if args.all_methods else MAIN_METHODS
        if args.methods:
            methods = common.parse_methods(args.methods)
        run_shape(sh, rows, tune_kkt, tune_intra, methods, with_fla=not args.no_fla,
                  with_whole=not args.no_whole and (sh["T"] in (8192, 32768) or args.smoke))
        common.save_results(args.out, "kernels", meta, rows)
    md = to_markdown(meta, rows)
    common.save_results(args.out, "kernels", meta, rows, md)
    plot(meta, rows, os.path.join(args.out, "kernels.png"))
    print(md)
    print(f"total {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

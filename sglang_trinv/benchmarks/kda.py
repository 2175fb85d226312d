"""KDA (Kimi-Linear) A/B benchmark on one GPU: SGLang's stock ``chunk_kda_fwd_intra`` vs ours
(:func:`sglang_trinv.ops.kda_fwd_intra`, every method), and the whole SGLang ``chunk_kda_fwd`` stock vs
through the plugin, its output and final state also against the fp64 twin of the whole forward
(``reference.kda.chunk_fwd``: the token recurrence per chunk, exact inverse; equal to ``recurrent_fwd`` to 1e-10 in
the tests).

Every time is a median of ``triton.testing.do_bench``; next to it, the error of that kernel's outputs against
an fp64 reference built from the same (bf16) inputs: ``max_rel = max|X − X64| / max|X64|`` for the inverse
``Akk = (I + A)^{-1}`` and for w, u. SGLang rounds the off-diagonal Gram operands to bf16 (ours does the same
by default), which dominates that error for every method alike; the column "Akk, exact Gram" is ours with fp32
Gram products (``gram_precision="ieee"``), i.e. the inversion method's own error.

Stock runs the schedule ``chunk_kda_fwd`` picks (``safe_gate = lower_bound is not None``,
``fuse_diagonal = fuse_recompute = B·NT·H ≤ 256``); ours is timed as ``chunk_kda_fwd`` runs it through the
plugin (w/u/kg fused, Akk not stored since that caller drops it). The errors are taken from a call with
``fuse_recompute=False`` (the only one that returns Akk).

    python bench/bench_kda.py --out DIR [--quick] [--tune] [--smoke]

Writes ``DIR/kda.json``, ``DIR/kda.md`` and ``DIR/kda.png`` (speed-up over stock per shape). ``--smoke``:
CPU + Triton interpreter, tiny shapes (checks the script without a GPU; its times mean nothing).
"""

from __future__ import annotations

import argparse
import math
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
from sglang_trinv.reference import kda as ref  # noqa: E402

FLA = "sglang.kernels.ops.attention.fla"
DEV = "cuda"
K_DIM = 128  # Kimi-Linear: head_dim 128 for q/k and v
RCP_LN2 = 1 / math.log(2.0)
LOWER_BOUND = -5.0  # the safe-gate bound Kimi-Linear's config uses with SGLang's safe_gate path


# ------------------------------------------------------------------------------------------ inputs
def make_inputs(T, H, K, V, nseq, seed, safe_gate=False, family="random", dtype=None):
    """Inputs as a Kimi-Linear KDA layer produces them: l2-normalised q/k, β = sigmoid, per-channel log-gate
    ``−exp(A_log)·softplus(x + dt_bias)`` (or ``lower_bound·sigmoid(…)`` for the safe gate), chunk-local
    cumsum in log2 as ``chunk_kda_fwd`` does."""
    from importlib import import_module

    dtype = dtype or (torch.bfloat16 if DEV == "cuda" else torch.float32)
    gen = torch.Generator(device=DEV).manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, device=DEV, generator=gen)  # noqa: E731
    q = F.normalize(rnd(1, T, H, K), dim=-1)
    k = F.normalize(rnd(1, T, H, K), dim=-1)
    v = rnd(1, T, H, V)
    beta = torch.sigmoid(rnd(1, T, H))
    A_log = torch.log(torch.rand(H, device=DEV, generator=gen) * 15 + 1)[None, None, :, None]  # A ∈ [1, 16)
    x = rnd(1, T, H, K) - 4.0  # dt_bias-shifted gate input: mostly slow decay, some fast channels
    g_raw = LOWER_BOUND * torch.sigmoid(A_log.exp() * x) if safe_gate else -A_log.exp() * F.softplus(x)
    if family == "identical_keys":  # every token of a chunk has the same key, β ≈ 1, no decay
        k = k[:, ::64].repeat_interleave(64, dim=1)[:, :T].contiguous()
        beta = torch.full_like(beta, 0.999)
        g_raw = torch.zeros_like(g_raw)
    elif family == "beta_1_2":  # β ∈ (1, 2] (negative-eigenvalue variants), correlated keys, no decay
        base = F.normalize(rnd(1, 1, H, K), dim=-1)
        k = F.normalize(base + 0.1 * k, dim=-1)
        beta = 1 + torch.rand(1, T, H, device=DEV, generator=gen)
        g_raw = torch.zeros_like(g_raw)
    cu = None
    if nseq > 1:  # varlen: random lengths with partial chunks, one of them 1 token long
        cuts = torch.sort(torch.randperm(T - 2, generator=torch.Generator().manual_seed(seed))[: nseq - 2] + 1)[0]
        cu = torch.cat([torch.tensor([0, 1]), cuts + 1, torch.tensor([T])]).unique().to(DEV, torch.int64)
    cumsum = import_module(f"{FLA}.cumsum").chunk_local_cumsum
    g = cumsum(g_raw, chunk_size=64, scale=RCP_LN2, cu_seqlens=cu)
    return dict(q=q.to(dtype), k=k.to(dtype), v=v.to(dtype), g=g, beta=beta.to(dtype), cu_seqlens=cu,
                g_raw=g_raw, safe_gate=safe_gate)


# ------------------------------------------------------------------------------------------ helpers
rel_err = common.rel_err


def bench(fn, reps=None):
    return common.time_us(fn, DEV, reps)


def stock_intra():
    from importlib import import_module

    return import_module(f"{FLA}.chunk_intra").chunk_kda_fwd_intra


def small_grid(inp, ci):
    B, T, H, _ = inp["k"].shape
    NT = triton.cdiv(T, 64) if inp["cu_seqlens"] is None else len(ci)
    return B * NT * H <= 256


def exact_gram_error(inp, method, precision, call, refs):
    """Akk error with fp32 (ieee) Gram products: the inversion's own error, without SGLang's bf16 roundings of
    the off-diagonal Gram operands (which dominate the default error, identically for every method)."""
    q, k, v, g, beta = (inp[n] for n in ("q", "k", "v", "g", "beta"))
    Akk = ops.kda_fwd_intra(q, k, v, g, beta, fuse_recompute=False, method=method, precision=precision,
                            gram_precision="ieee", **call)[5]
    return rel_err(Akk, refs[4])["max_rel"]


def errors(w, u, Akk, refs):
    w64, u64, _, _, A64 = refs
    e = rel_err(Akk, A64) if Akk is not None else {}
    e.update({f"w_{k}": v for k, v in rel_err(w, w64).items()})
    e.update({f"u_{k}": v for k, v in rel_err(u, u64).items()})
    return e


# ------------------------------------------------------------------------------------------ runs
def default_methods():
    """Every method with a kernel at its default precision, plus stock-precision variants."""
    out = [(m, None) for m in ops.KERNEL_METHODS]
    out += [("forward_substitution", "tf32"), ("blockdoubling", "bf16x3/tf32"), ("blockdoubling", "tf32")]
    return out


def label(p):
    return p or "default"


def run_shape(shape, rows, methods, tuning, with_whole, seed=0, one_kernel=True, whole_methods=None):
    T, H, nseq, sg = shape["T"], shape["H"], shape["nseq"], shape["safe_gate"]
    inp = make_inputs(T, H, K_DIM, K_DIM, nseq, seed, safe_gate=sg)
    q, k, v, g, beta, cu = (inp[n] for n in ("q", "k", "v", "g", "beta", "cu_seqlens"))
    ci = ops.prepare_chunk_indices(cu, 64) if cu is not None else None
    scale = K_DIM ** -0.5
    fuse = small_grid(inp, ci)
    tag = dict(T=T, H=H, nseq=nseq, safe_gate=sg, stock_fused=fuse)
    refs = ref.fwd_intra(q, k, v, g, beta, scale, cu)

    def record(name, precision, t, e):
        rows.append(dict(kind="intra", method=name, precision=precision, us=t, **tag, **e))
        print(f"  intra {name:22s} {precision:12s} {t:9.1f} us  max_rel(Akk)={e.get('max_rel', 0):.2e} "
              f"w={e.get('w_max_rel', 0):.2e} u={e.get('u_max_rel', 0):.2e}"
              f"{'  NONFINITE=%d' % e['nonfinite'] if e.get('nonfinite') else ''}", flush=True)

    stock = stock_intra()
    call = dict(scale=scale, cu_seqlens=cu, chunk_indices=ci, safe_gate=sg)
    w, u, _, kg, Aqk, Akk = stock(q, k, v, gk=g, beta=beta, fuse_recompute=False, fuse_diagonal=False, **call)
    t = bench(lambda: stock(q, k, v, gk=g, beta=beta, fuse_recompute=fuse, fuse_diagonal=fuse, **call))
    record("stock", "sglang", t, errors(w, u, Akk, refs))
    for m, p in methods:
        w, u, _, kg, Aqk, Akk = ops.kda_fwd_intra(q, k, v, g, beta, fuse_recompute=False, method=m, precision=p,
                                                  tuning=tuning, **call)
        e = errors(w, u, Akk, refs)
        e["exact_gram_max_rel"] = exact_gram_error(inp, m, p, call, refs)
        # timed as chunk_kda_fwd runs it through the plugin: Akk not stored (SGLang drops it), w/u/kg fused
        f = lambda: ops.kda_fwd_intra(q, k, v, g, beta, fuse_recompute=True, fuse_diagonal=fuse, method=m,  # noqa: E731
                                      precision=p, tuning=tuning, **call)
        record(m, label(p), bench(f), e)
    if not sg and one_kernel:  # the one-kernel variant (diagonal Gram tiles in our kernel too), for the default method
        m, p = methods[0]
        f = lambda: ops.kda_fwd_intra(q, k, v, g, beta, fuse_recompute=True, fuse_diagonal=fuse, method=m,  # noqa: E731
                                      precision=p, tuning=tuning, diag_gram="fused", **call)
        w, u, _, kg, Aqk, Akk = ops.kda_fwd_intra(q, k, v, g, beta, fuse_recompute=False, method=m, precision=p,
                                                  tuning=tuning, diag_gram="fused", **call)
        record(f"{m} (one kernel)", label(p), bench(f), errors(w, u, Akk, refs))
    if with_whole:
        run_whole(inp, tag, rows, whole_methods or methods[:2])


def run_whole(inp, tag, rows, methods):
    """SGLang's chunk_kda_fwd, stock vs through the plugin (exactly as a server with --linear-attn-inv runs)."""
    from importlib import import_module

    import sglang_trinv

    kda = import_module(f"{FLA}.kda")
    q, k, v, beta, cu, g_raw = (inp[n] for n in ("q", "k", "v", "beta", "cu_seqlens", "g_raw"))
    H, K = k.shape[2], k.shape[3]
    N = 1 if cu is None else len(cu) - 1
    gen = torch.Generator(device=DEV).manual_seed(1)
    h0 = torch.randn(N, H, v.shape[-1], K, device=DEV, generator=gen) * 0.1
    idx = torch.arange(N, device=DEV)
    ci = ops.prepare_chunk_indices(cu, 64) if cu is not None else None
    lb = LOWER_BOUND if inp["safe_gate"] else None
    v_buf = v.clone()  # chunk_kda_fwd writes o into v

    def run(state):
        v_buf.copy_(v)
        return kda.chunk_kda_fwd(q, k, v_buf, g_raw, beta, K ** -0.5, state, idx, cu_seqlens=cu,
                                 lower_bound=lb, chunk_indices=ci)

    from sglang_trinv.plugin._state import ENV_KDA

    # the fp64 whole forward (reference.kda.chunk_fwd, exact inverse: one state update per chunk; the token
    # recurrence moves the fp64 state [H, V, K] several times per token, and s21's whole rows at T=8192 H=32 did not
    # finish within a 165 s step): every row's error is against it
    o64, s64 = ref.chunk_fwd(q, k, v, g_raw, beta, K ** -0.5, h0, cu)
    from sglang_trinv.plugin.gdn import ENV_STATE_LAUNCH

    results = {}
    ours = [(m, p) for m, p in methods if m != "stock"]
    # the first method again with SGLang's own state launch (ENV_STATE_LAUNCH=sglang): what the plugin's tuned
    # launch of SGLang's state kernel adds (stock could set SGLang's launch variables too)
    for name, p, launch in [("stock", None, None)] + [(m, p, None) for m, p in ours] + \
            [(m, p, "sglang") for m, p in ours[:1]]:
        # "1": our kernel for safe_gate shapes too (the plugin's default "auto" keeps those stock)
        with common.env_var(ENV_KDA, "1"), common.env_var(ENV_STATE_LAUNCH, launch):
            sglang_trinv.patch(method=name, precision=p) if name != "stock" else sglang_trinv.unpatch()
            try:
                state = h0.clone()
                o = run(state).float().clone()
                results[(name, p, launch)] = (o, state.clone())
                scratch = h0.clone()
                t = bench(lambda: run(scratch))
                # GPU time alone (CUDA-graph replays): at small shapes the eager time is the host's launch cost
                t_graph = common.graph_us(lambda: run(scratch), DEV)
            finally:
                sglang_trinv.unpatch()
        o0, s0 = results[("stock", None, None)]
        d_o = float((o - o0).abs().max() / o0.abs().max())
        d_s = float((state - s0).abs().max() / s0.abs().max())
        e_o = float((o.double() - o64).abs().max() / o64.abs().max())
        e_s = float((state.double() - s64).abs().max() / s64.abs().max())
        prec = (label(p) + (", SGLang's state launch" if launch else "")) if name != "stock" else "sglang"
        rows.append(dict(kind="kda_fwd", method=name, precision=prec, us=t, graph_us=t_graph,
                         state_launch=launch or "tuned",
                         o_rel_vs_stock=d_o, state_rel_vs_stock=d_s, o_rel_vs_fp64=e_o, state_rel_vs_fp64=e_s, **tag))
        g_txt = f" (graph {t_graph:.1f})" if t_graph else ""
        print(f"  kda_fwd {name:20s} {prec:12s} {t:9.1f} us{g_txt}  o vs fp64 {e_o:.2e}  state vs fp64 {e_s:.2e}  "
              f"o vs stock {d_o:.2e}  state vs stock {d_s:.2e}", flush=True)


def families(rows, methods):
    """Adversarial families (T=4096, H=8): error of Akk per method vs stock."""
    for fam in ("identical_keys", "beta_1_2"):
        inp = make_inputs(4096 if DEV == "cuda" else 70, 8 if DEV == "cuda" else 1, K_DIM, K_DIM, 1, 3,
                          family=fam)
        q, k, v, g, beta = (inp[n] for n in ("q", "k", "v", "g", "beta"))
        refs = ref.fwd_intra(q, k, v, g, beta)
        out = stock_intra()(q, k, v, gk=g, beta=beta, scale=K_DIM ** -0.5)
        e = errors(out[0], out[1], out[5], refs)
        rows.append(dict(kind="family", family=fam, method="stock", precision="sglang", **e))
        print(f"  family {fam:15s} stock {e}", flush=True)
        for m, p in methods:
            out = ops.kda_fwd_intra(q, k, v, g, beta, method=m, precision=p)
            e = errors(out[0], out[1], out[5], refs)
            e["exact_gram_max_rel"] = exact_gram_error(inp, m, p, dict(scale=K_DIM ** -0.5), refs)
            rows.append(dict(kind="family", family=fam, method=m, precision=label(p), **e))
            print(f"  family {fam:15s} {m} {label(p)} {e}", flush=True)


# --tune-configs flags after WARPS/BK/BV/STAGES -> Tuning fields (each flag at most once, any order)
TUNE_FLAGS = {"hf": "heads_fastest",  # the grid heads fastest
              "dm": "diag_masks",  # the diagonal tiles' doubling with the level masks on the products (bitwise)
              "sp": "split_packed"}  # bf16x3 hi/lo splits by packed conversions (inline PTX)


def _tune_config(text: str) -> ops.Tuning:
    """'WARPS/BK/BV/STAGES[/FLAG...]' with FLAG in TUNE_FLAGS, e.g. '2/32/32/3/hf/dm'."""
    parts = text.split("/")
    flags = parts[4:]
    if len(parts) < 4 or any(f not in TUNE_FLAGS for f in flags) or len(set(flags)) != len(flags):
        raise ValueError(text)
    nw, bk, bv, st = map(int, parts[:4])
    return ops.Tuning(num_warps=nw, BK=bk, BV=bv, num_stages=st, **{TUNE_FLAGS[f]: True for f in flags})


def run_tuning(rows, candidates, T=8192, H=32):
    """Time the KDA intra kernel (blockdoubling, one sequence of T tokens, H heads) under each candidate tuning;
    returns the fastest."""
    T, H = (T, H) if DEV == "cuda" else (70, 1)
    inp = make_inputs(T, H, K_DIM, K_DIM, 1, 0)
    q, k, v, g, beta = (inp[n] for n in ("q", "k", "v", "g", "beta"))
    best = None
    for tu in candidates:
        try:
            t = bench(lambda: ops.kda_fwd_intra(q, k, v, g, beta, fuse_recompute=True, tuning=tu))
        except Exception as e:  # e.g. out of shared memory: reported, not fatal
            rows.append(dict(kind="tune", T=T, H=H, tuning=tu.__dict__, error=repr(e)[:200]))
            continue
        rows.append(dict(kind="tune", T=T, H=H, tuning=tu.__dict__, us=t))
        print(f"  tune T={T} H={H} {tu}: {t:.1f} us", flush=True)
        if best is None or t < best[0]:
            best = (t, tu)
    return best[1] if best else None


def to_markdown(meta, rows):
    out = [f"# KDA benchmark — {meta['gpu']} — {meta['date']}", "",
           f"torch {meta['torch']}, triton {meta['triton']}, sglang {meta['sglang']}, bf16 inputs, K=V={meta['K']}, "
           f"tuning {meta['tuning']}. Times: median µs (do_bench), for the schedule chunk_kda_fwd uses "
           "(stock fused iff B·NT·H ≤ 256; ours as the plugin runs it, Akk not stored). max_rel = max|X−X64|/max|X64| (Akk = (I+A)^-1, w, u); "
           "'exact Gram': ours with fp32 Gram products (the inversion's own error).", ""]
    sel = [r for r in rows if r.get("kind") == "intra" and "us" in r]
    if sel:
        out += ["## chunk_kda_fwd_intra", "",
                "| T | H | seqs | safe_gate | method | precision | µs | vs stock | Akk max_rel | Akk, exact Gram | "
                "w max_rel | u max_rel | nonfinite |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sel:
            base = next((b["us"] for b in sel if b["method"] == "stock" and all(
                b[x] == r[x] for x in ("T", "H", "nseq", "safe_gate"))), None)
            out.append(f"| {r['T']} | {r['H']} | {r['nseq']} | {r['safe_gate']} | {r['method']} | {r['precision']} | "
                       f"{r['us']:.1f} | {base / r['us']:.2f}× | {r.get('max_rel', float('nan')):.2e} | "
                       f"{r.get('exact_gram_max_rel', float('nan')):.2e} | "
                       f"{r['w_max_rel']:.2e} | {r['u_max_rel']:.2e} | {r.get('nonfinite', '')} |")
        out.append("")
    sel = [r for r in rows if r.get("kind") == "kda_fwd"]
    if sel:
        out += ["## Whole chunk_kda_fwd (stock vs through the plugin)", "",
                "µs: do_bench (eager: host launch time included); graph µs: CUDA-graph replays, the GPU time alone "
                "(— where the call could not be captured).", "",
                "| T | H | seqs | safe_gate | method | precision | µs | vs stock | graph µs | vs stock | o vs fp64 | "
                "state vs fp64 | o vs stock | state vs stock |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sel:
            b = next((b for b in sel if b["method"] == "stock" and all(
                b[x] == r[x] for x in ("T", "H", "nseq", "safe_gate"))), None)
            gr = r.get("graph_us")
            g_txt = (f"{gr:.1f} | {b['graph_us'] / gr:.2f}×" if gr and b.get("graph_us") else "— | —")
            out.append(f"| {r['T']} | {r['H']} | {r['nseq']} | {r['safe_gate']} | {r['method']} | {r['precision']} | "
                       f"{r['us']:.1f} | {b['us'] / r['us']:.2f}× | {g_txt} | {r.get('o_rel_vs_fp64', float('nan')):.2e} | "
                       f"{r.get('state_rel_vs_fp64', float('nan')):.2e} | {r['o_rel_vs_stock']:.2e} | "
                       f"{r['state_rel_vs_stock']:.2e} |")
        out.append("")
    fam = [r for r in rows if r.get("kind") == "family"]
    if fam:
        out += ["## Adversarial families (T=4096, H=8)", "", "| family | method | precision | Akk max_rel | "
                "Akk, exact Gram | w max_rel | nonfinite |", "|---|---|---|---|---|---|---|"]
        for r in fam:
            out.append(f"| {r['family']} | {r['method']} | {r['precision']} | {r['max_rel']:.2e} | "
                       f"{r.get('exact_gram_max_rel', float('nan')):.2e} | {r['w_max_rel']:.2e} | {r['nonfinite']} |")
        out.append("")
    tune = [r for r in rows if r.get("kind") == "tune"]
    if tune:
        out += ["## Launch configurations (blockdoubling, one sequence)", "", "| T | H | config | µs |",
                "|---|---|---|---|"]
        out += [f"| {r.get('T', '')} | {r.get('H', '')} | {r['tuning']} | {r.get('us', r.get('error'))} |"
                for r in tune]
    return "\n".join(out) + "\n"


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", default="bench/results/latest-kda")
    ap.add_argument("--quick", action="store_true", help="T=8192, H=32 and H=8, one sequence, exact gate only")
    ap.add_argument("--tune", action="store_true", help="sweep launch configurations first (default method)")
    ap.add_argument("--no-whole", action="store_true", help="skip the whole chunk_kda_fwd runs")
    ap.add_argument("--no-families", action="store_true")
    ap.add_argument("--no-one-kernel", action="store_true", help="skip the diag_gram='fused' one-kernel rows")
    ap.add_argument("--shapes", default=None,
                    help="T:H:SEQS:SAFE_GATE,... (e.g. 8192:32:1:0,8192:32:8:1) instead of the --quick/full plan")
    ap.add_argument("--tune-shapes", default="8192:32",
                    help="T:H,... the --tune sweep's shapes (one sequence; the last one's best config runs the rest)")
    ap.add_argument("--tune-configs", default=None,
                    help="--tune candidates as WARPS/BK/BV/STAGES[/hf][/dm][/sp],... (hf: the grid heads fastest; "
                         "dm: masked doubling products; sp: packed bf16x3 splits; default: a 1/2/4-warp grid)")
    ap.add_argument("--smoke", action="store_true", help="CPU + Triton interpreter, tiny shapes (checks the script)")
    ap.add_argument("--whole-methods", default=None,
                    help="methods for the whole chunk_kda_fwd rows, METHOD[:PRECISION],... (default: blockdoubling "
                         "if benchmarked, else the first method)")
    ap.add_argument("--methods", default=None,
                    help="comma list of METHOD[:PRECISION] (default: every method at its default precision, "
                         "plus stock-precision variants)")


def main(argv=None) -> int:
    return common.cli_main(__doc__, add_arguments, run, argv)


def run(args) -> int:
    global DEV, K_DIM
    if args.smoke:
        DEV, K_DIM = "cpu", 16
    os.makedirs(args.out, exist_ok=True)

    methods = default_methods()
    if args.methods:
        methods = common.parse_methods(args.methods)
    whole_methods = (common.parse_methods(args.whole_methods) if args.whole_methods else
                     [mp for mp in methods if mp == ("blockdoubling", None)] or methods[:1])
    tuning = ops.KDA_DEFAULT_TUNING
    rows = []
    t0 = time.time()
    if args.tune:
        # 1/2/4 warps around the H200 sweeps' region (results/2026-11-27-h200-kda); --tune-configs narrows it
        cands = [ops.Tuning(num_warps=nw, BK=bk, BV=bv, num_stages=st)
                 for nw in (1, 2, 4) for bk, bv in ((16, 16), (16, 32), (32, 32)) for st in (1, 2)]
        if args.tune_configs:
            try:
                cands = [_tune_config(c) for c in args.tune_configs.split(",")]
            except ValueError:
                raise SystemExit(f"--tune-configs {args.tune_configs!r}: expected WARPS/BK/BV/STAGES[/hf][/dm][/sp],...") \
                    from None
        try:
            tune_shapes = [tuple(int(x) for x in sh.split(":")) for sh in args.tune_shapes.split(",")]
        except ValueError:
            raise SystemExit(f"--tune-shapes {args.tune_shapes!r}: expected T:H,...") from None
        for T, H in tune_shapes:
            tuning = run_tuning(rows, cands[:2] if args.smoke else cands, T, H) or tuning
    meta = common.run_meta(DEV, K=K_DIM, tuning=tuning.__dict__, kda_gram_precision=ops.KDA_GRAM_PRECISION)
    print(meta, flush=True)
    if args.shapes:
        try:
            shapes = [dict(T=int(t), H=int(h), nseq=int(n), safe_gate=bool(int(sg)))
                      for t, h, n, sg in (x.split(":") for x in args.shapes.split(","))]
        except ValueError:
            raise SystemExit(f"--shapes {args.shapes!r}: expected T:H:SEQS:SAFE_GATE,...") from None
    elif args.smoke:
        shapes = [dict(T=70, H=2, nseq=1, safe_gate=False), dict(T=100, H=1, nseq=3, safe_gate=True)]
    elif args.quick:
        shapes = [dict(T=8192, H=H, nseq=1, safe_gate=False) for H in (32, 8)]
    else:  # most important first: Kimi-Linear's 32 heads (TP 1) and 8 heads (TP 4)
        shapes = [dict(T=T, H=H, nseq=n, safe_gate=sg) for T in (8192, 32768, 4096) for H in (32, 8)
                  for n in (1, 8) for sg in (False, True)]
    if not args.no_families:
        families(rows, methods)
    for i, sh in enumerate(shapes):
        print(f"[{i + 1}/{len(shapes)}] {sh}  ({time.time() - t0:.0f}s)", flush=True)
        run_shape(sh, rows, methods, tuning,
                  with_whole=not args.no_whole and bool(args.shapes or sh["T"] == 8192 and sh["nseq"] == 1 or args.smoke),
                  one_kernel=not args.no_one_kernel, whole_methods=whole_methods)
        common.save_results(args.out, "kda", meta, rows)
    md = to_markdown(meta, rows)
    common.save_results(args.out, "kda", meta, rows, md)
    from .kernels import plot

    common.try_plot(plot, meta, rows, os.path.join(args.out, "kda.png"),
                    [("intra", "chunk_kda_fwd_intra"), ("kda_fwd", "whole chunk_kda_fwd (plugin)")])
    print(md)
    print(f"total {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

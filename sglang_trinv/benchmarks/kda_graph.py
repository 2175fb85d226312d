"""KDA prefill as SGLang 0.5.23 runs it by default: captured in a breakable prefill CUDA graph per token bucket.

SGLang's ``srt/layers/attention/linear/kda_prefill_graph.py`` captures the whole KDA extend once per bucket of
``num_tokens`` with tables sized by the bucket, and replays it for every batch that fits after rewriting them:

- ``max_seqs = min(num_tokens, SGLANG_KDA_PREFILL_GRAPH_MAX_SEQS = 128)`` sequences: ``cu_seqlens`` has
  ``max_seqs + 1`` entries, the padded sequences are empty (the total repeated);
- ``max_chunks = cdiv(num_tokens, 64) + max_seqs`` rows of ``chunk_indices`` (sequence-major (seq, chunk) pairs),
  padded with ``(0, 2^20)``, a chunk past any sequence, so every chunk kernel returns at its ``t0 >= T`` guard;
- ``chunk_offsets`` (``max_seqs + 1``): each sequence's first chunk row; the state pool's slot of each sequence is
  ``-1`` (PAD_SLOT_ID) past the batch.

So the wrappers' host cost is paid once, at capture, and a replay costs GPU time over the padded grid. The whole
chain (``chunk_kda``: q/k l2norm, gate activation + cumsum, intra, state, output) is captured with stock and through
the plugin (``--linear-attn-inv`` as a server runs it); each graph is then replayed for the batch (median µs per
replay: CUDA events around 10 back-to-back replays, 25 times). The outputs of the batch's tokens and its final states
are compared with the fp64 chunk-wise twin (``reference.kda.chunk_fwd``) and with stock. ``--profile`` adds each
path's kernels (``torch.profiler`` over graph replays); ``--gate`` picks how the gate comes in (see ``make_case``).

    sglang-trinv bench kda-graph [--out DIR] [--cases BUCKET:H:LEN+LEN…,…] [--gate fused|activated] [--profile]

``--smoke``: CPU + Triton interpreter, eager (no graphs), tiny shapes: checks the script and the padded tables.
"""

from __future__ import annotations

import argparse
import os
import sys

if "--smoke" in sys.argv:  # the interpreter must be on before Triton (and any kernel) is imported
    from sglang_trinv.testing import enable_interpreter

    enable_interpreter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from sglang_trinv.benchmarks import common  # noqa: E402
from sglang_trinv.ops._host import cdiv  # noqa: E402

FLA = "sglang.kernels.ops.attention.fla"
CHUNK = 64
MAX_SEQS_CAP = 128  # SGLANG_KDA_PREFILL_GRAPH_MAX_SEQS's default
PAD_CHUNK = 1 << 20  # kda_prefill_graph._PAD_CHUNK
PAD_SLOT_ID = -1  # causal_conv1d_triton.PAD_SLOT_ID
# bucket (tokens), heads per rank, one batch's sequence lengths: Kimi-Linear has 32 KDA heads of 128 (8 per rank at
# TP 4); one long prompt, and a mixed batch with a 1-token sequence and partial chunks
CASES = "2048:32:2048,2048:32:700+1+1000+300,8192:32:8192,8192:32:1000+3000+1+2500+1024+600,8192:8:8192"
SMOKE_CASES = "160:2:1+70+50"


def prefill_graph_tables(lens, num_tokens: int, max_seqs_cap: int = MAX_SEQS_CAP, device="cpu") -> dict:
    """The tables SGLang's ``KDAPrefillGraphMetadata`` holds for a batch of sequence lengths ``lens`` in a bucket of
    ``num_tokens`` (its ``allocate`` + ``_write_host_tables``, without prefix-cache tracking): ``cu_seqlens``
    ``[max_seqs + 1]``, ``chunk_indices`` ``[max_chunks, 2]``, ``chunk_offsets`` ``[max_seqs + 1]`` (int32)."""
    lens = np.asarray(lens, dtype=np.int64)
    max_seqs = max(1, min(num_tokens, max_seqs_cap))
    max_chunks = cdiv(num_tokens, CHUNK) + max_seqs
    if len(lens) > max_seqs or lens.sum() > num_tokens:
        raise ValueError(f"batch of {len(lens)} sequences / {lens.sum()} tokens exceeds the bucket "
                         f"({max_seqs} / {num_tokens})")
    cu = np.full(max_seqs + 1, lens.sum(), dtype=np.int64)
    cu[0] = 0
    cu[1:len(lens) + 1] = np.cumsum(lens)
    n_chunks = (lens + CHUNK - 1) // CHUNK
    ci = np.empty((max_chunks, 2), dtype=np.int64)
    n = int(n_chunks.sum())
    ci[:n, 0] = np.repeat(np.arange(len(lens)), n_chunks)
    ci[:n, 1] = np.arange(n) - np.repeat(np.cumsum(n_chunks) - n_chunks, n_chunks)
    ci[n:] = (0, PAD_CHUNK)
    offsets = np.full(max_seqs + 1, n, dtype=np.int64)
    offsets[0] = 0
    offsets[1:len(lens) + 1] = np.cumsum(n_chunks)
    # one int32 buffer in SGLang's order, as its ``packed``: SGLang's token-parallel diagonal kernel (which the
    # plugin's KDA path runs) reads cu_seqlens[N + 1], one entry past the table, for tokens past the batch; there it
    # reads chunk_indices[0, 0] = 0, so those tokens return at once
    packed = torch.tensor(np.concatenate([cu, ci.reshape(-1), offsets]), dtype=torch.int32, device=device)
    cu_t, ci_t, off_t = torch.split(packed, [max_seqs + 1, 2 * max_chunks, max_seqs + 1])
    return dict(cu_seqlens=cu_t, chunk_indices=ci_t.view(max_chunks, 2), chunk_offsets=off_t, max_seqs=max_seqs,
                max_chunks=max_chunks, packed=packed)


def refill(case: dict, lens, seed: int = 1) -> None:
    """Point a bucket's case at another batch in place, as SGLang's ``fill`` does before a replay: the tables
    rewritten, the state slots of the new sequences (shuffled) and PAD_SLOT_ID past them."""
    t = case["tables"]
    new = prefill_graph_tables(lens, case["num_tokens"], case["max_seqs_cap"], device=t["cu_seqlens"].device)
    t["packed"].copy_(new["packed"])
    slots = torch.full_like(case["slots"], PAD_SLOT_ID)
    slots[:len(lens)] = torch.randperm(case["pool"].shape[0], generator=torch.Generator().manual_seed(seed))[
        :len(lens)].to(slots.device, slots.dtype)
    case["slots"].copy_(slots)
    case["lens"] = list(lens)


GATES = ("fused", "activated")


def make_case(num_tokens: int, H: int, K: int, lens, device, dtype, seed=0, max_seqs_cap=MAX_SEQS_CAP,
              gate: str = "fused") -> dict:
    """A bucket's static inputs as the captured extend sees them: q, k, v, the gate and β for all ``num_tokens`` rows
    (rows past the batch hold the conv of padding: random here), a state pool with two more slots than sequences,
    the batch's slots in a shuffled order.

    ``gate="fused"`` (Kimi-Linear's path through ``kda_extend_in_graph``): the raw gate projection with ``A_log`` and
    ``dt_bias``, and raw β logits (``beta_is_raw``), activated inside SGLang's ``kda_gate_chunk_cumsum``:
    ``g = −exp(A_log)·softplus(raw + dt_bias)``, ``β = sigmoid(logit)``. ``"activated"``: g and β given activated
    (the cumsum is ``chunk_local_cumsum``; what session 30's GPU runs used). ``g_act`` / ``beta_act`` hold the
    activated values for the fp64 reference either way."""
    if gate not in GATES:
        raise ValueError(f"gate={gate!r}: choose from {GATES}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    T = num_tokens
    q, k = F.normalize(rnd(1, T, H, K), dim=-1), F.normalize(rnd(1, T, H, K), dim=-1)
    v = rnd(1, T, H, K)
    A_log = torch.log(1 + 15 * torch.rand(H, generator=gen))  # A ∈ [1, 16): some fast heads
    dt_bias = (-4.0 + 0.5 * rnd(H, K)).reshape(-1)  # mostly slow decay
    g_raw = rnd(1, T, H, K).to(dtype).float()  # (the projection's dtype)
    beta_logit = rnd(1, T, H).to(dtype).float()
    g_act = -A_log.exp()[None, None, :, None] * F.softplus(g_raw + dt_bias.view(H, K))
    beta_act = torch.sigmoid(beta_logit)
    tables = prefill_graph_tables(lens, num_tokens, max_seqs_cap, device=device)
    max_seqs = tables["max_seqs"]
    pool = rnd(max_seqs + 2, H, K, K) * 0.1
    slots = torch.full((max_seqs,), PAD_SLOT_ID, dtype=torch.int32)
    slots[:len(lens)] = torch.randperm(max_seqs + 2, generator=gen)[:len(lens)].to(torch.int32)
    to = lambda x: x.to(device)  # noqa: E731
    fused = gate == "fused"
    return dict(q=to(q).to(dtype), k=to(k).to(dtype), v=to(v).to(dtype),
                g_in=to(g_raw).to(dtype) if fused else to(g_act),
                beta_in=to(beta_logit).to(dtype) if fused else to(beta_act).to(dtype),
                A_log=to(A_log) if fused else None, dt_bias=to(dt_bias) if fused else None, beta_is_raw=fused,
                g_act=to(g_act), beta_act=to(beta_act) if fused else to(beta_act).to(dtype).float(), gate=gate,
                pool=to(pool), slots=to(slots), tables=tables, lens=list(lens), num_tokens=num_tokens,
                max_seqs_cap=max_seqs_cap)


def extend(case: dict, pool: torch.Tensor, v_buf: torch.Tensor):
    """SGLang's ``chunk_kda`` as ``TritonKDAKernel.extend`` calls it from the captured extend (l2norm in the
    kernel, the padded tables, the gate as ``make_case`` gives it): o ``[1, num_tokens, H, V]``, final states written
    into ``pool`` at the batch's slots."""
    from importlib import import_module

    kda = import_module(f"{FLA}.kda")
    t = case["tables"]
    K = case["k"].shape[-1]
    return kda.chunk_kda(q=case["q"], k=case["k"], v=v_buf, g=case["g_in"], beta=case["beta_in"], scale=K ** -0.5,
                         initial_state=pool, initial_state_indices=case["slots"], use_qk_l2norm_in_kernel=True,
                         cu_seqlens=t["cu_seqlens"], A_log=case["A_log"], dt_bias=case["dt_bias"], lower_bound=None,
                         beta_is_raw=case["beta_is_raw"], chunk_indices=t["chunk_indices"],
                         chunk_offsets=t["chunk_offsets"])


def reference(case: dict, pool0: torch.Tensor):
    """fp64 o of the batch's tokens ``[1, total, H, V]`` and the batch's final states ``[N, H, V, K]``."""
    from sglang_trinv.reference import kda as ref

    lens = case["lens"]
    total = sum(lens)
    dev = pool0.device  # (on the GPU: the fp64 reference at T=8192 H=32 takes seconds there, minutes on a CPU)
    cu = torch.tensor([0, *np.cumsum(lens).tolist()], dtype=torch.int64, device=dev)
    h0 = pool0[case["slots"][:len(lens)].long()]
    cut = lambda x: x[:, :total].double()  # noqa: E731
    q = F.normalize(cut(case["q"]), dim=-1)
    k = F.normalize(cut(case["k"]), dim=-1)
    K = k.shape[-1]
    return ref.chunk_fwd(q, k, cut(case["v"]), cut(case["g_act"]), cut(case["beta_act"]), K ** -0.5, h0.double(),
                         cu)


class Captured:
    """One path's extend for a bucket, with its own state pool and o buffer: captured in a CUDA graph on a GPU,
    called eagerly on a CPU. The graph holds the extend alone (SGLang's replays update the pool in place and take v
    fresh from the conv kernel); ``run`` resets the pool and v outside it first."""

    def __init__(self, case: dict, device: str):
        self.case = case
        self.pool = case["pool"].clone()
        self.v_buf = case["v"].clone()
        self.graph = None
        if device == "cuda":  # (the warm-up calls run SGLang's autotuners and every JIT compile, outside the capture)
            self.graph = common.capture_graph(self._extend)

    def _extend(self):
        self.o = extend(self.case, self.pool, self.v_buf)

    def run(self):
        """(o, pool) of one extend from the initial pool and v, for the tables as they are now."""
        self.pool.copy_(self.case["pool"])
        self.v_buf.copy_(self.case["v"])  # chunk_kda_fwd writes o into v
        if self.graph is None:
            self._extend()
        else:
            self.graph.replay()
        return self.o, self.pool

    def time_us(self, rounds: int = 25, inner: int = 10) -> float | None:
        """Median µs per replay (``inner`` back-to-back replays between two events, ``rounds`` times)."""
        return None if self.graph is None else common.replay_us(self.graph, inner, rounds)


def compare(case, o, pool, o64, s64, stock=None) -> dict:
    """Errors of the batch's rows and final states vs fp64 (and vs stock's), and whether the untouched parts (o
    rows past the batch: v as it was; pool slots of no sequence) stayed as they were."""
    lens = case["lens"]
    total, N = sum(lens), len(lens)
    slots = case["slots"][:N].long()
    rel = lambda x, r: float((x.double().to(r.device) - r).abs().max() / r.abs().max())  # noqa: E731
    out = dict(o_err=rel(o[:, :total], o64), state_err=rel(pool[slots], s64))
    others = torch.ones(pool.shape[0], dtype=torch.bool, device=pool.device)
    others[slots] = False
    out["untouched"] = bool(torch.equal(o[:, total:], case["v"][:, total:])
                            and torch.equal(pool[others], case["pool"][others]))
    if stock is not None:
        so, spool = stock
        out["o_vs_stock"] = rel(o[:, :total], so[:, :total].double())
        out["state_vs_stock"] = rel(pool[slots], spool[slots].double())
    return out


def parse_cases(text: str):
    """``"BUCKET:H:LEN+LEN…,…"`` -> [(bucket, H, [lens])]."""
    cases = []
    for item in text.split(","):
        try:
            bucket, H, lens = item.split(":")
            cases.append((int(bucket), int(H), [int(x) for x in lens.split("+")]))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: expected BUCKET:H:LEN+LEN…, e.g. 2048:32:700+1+1000") \
                from None
    return cases


def run_case(bucket, H, lens, rows, device, method, K, profile=False, gate="fused"):
    import sglang_trinv
    import sglang_trinv.plugin

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    case = make_case(bucket, H, K, lens, device, dtype, gate=gate)
    o64, s64 = reference(case, case["pool"])
    tag = dict(bucket=bucket, H=H, lens="+".join(map(str, lens)), seqs=len(lens),
               max_chunks=case["tables"]["max_chunks"], real_chunks=sum(cdiv(n, CHUNK) for n in lens))
    sglang_trinv.unpatch()
    stock = Captured(case, device)
    s_out = tuple(x.clone() for x in stock.run())
    results = [("stock", stock.time_us(), s_out, {}, None, _kernels(stock, profile))]
    sglang_trinv.patch(method=method)
    try:  # (eagerly on a CPU: the plugin must stay on while the extend runs)
        counts = sglang_trinv.plugin.active().counts
        before = counts.get("kda", 0)
        ours = Captured(case, device)
        o_out = tuple(x.clone() for x in ours.run())  # (the timing replays below overwrite o and the pool)
        served = sglang_trinv.plugin.active().counts.get("kda", 0) > before
        results.append((method, ours.time_us(), o_out, dict(stock=s_out), served, _kernels(ours, profile)))
    finally:
        sglang_trinv.unpatch()
    for name, us, res, kw, served, kernels in results:
        r = dict(path=name, us=us, served_by_plugin=served, **tag, **compare(case, *res, o64, s64, **kw))
        if kernels:
            r["kernels"] = kernels
        rows.append(r)
        t = "—" if us is None else f"{us:8.1f} us"
        print(f"  {bucket:6d} H={H:2d} {tag['lens']:28s} {name:14s} {t}  o {r['o_err']:.2e} "
              f"state {r['state_err']:.2e}{'' if r['untouched'] else '  TOUCHED PADDING'}"
              f"{'  (NOT SERVED BY THE PLUGIN)' if served is False else ''}", flush=True)
        for kname, kus in sorted((kernels or {}).items(), key=lambda x: -x[1]):
            print(f"      {kus:8.1f}  {kname}")


def _kernels(path: Captured, profile: bool) -> dict | None:
    """{kernel name: µs per replay} of a captured path (``--profile``, GPU only)."""
    if not profile or path.graph is None:
        return None
    return common.graph_kernel_us(path.graph, 20)[0]


def to_markdown(meta, rows) -> list[str]:
    details = (f"chunk_kda captured per bucket with SGLang's padded tables (≤ {meta['max_seqs_cap']} sequences), "
               f"{meta['dtype']}, K=V={meta['K']}, gate {meta.get('gate', 'activated')}; µs = median per graph "
               "replay; errors max-rel vs fp64 on the batch's rows / final states")
    lines = common.md_header("KDA extend in SGLang's prefill CUDA graphs, stock vs plugin", meta, details)
    lines += ["| bucket | H | batch | chunk rows (real / padded grid) | stock µs | plugin µs | speed-up "
              "| o err stock / plugin | state err stock / plugin |", "|---|---|---|---|---|---|---|---|---|"]
    by = {}
    for r in rows:
        by.setdefault((r["bucket"], r["H"], r["lens"]), {})[r["path"]] = r
    for (bucket, H, lens), d in by.items():
        s = d.get("stock")
        o = next((x for p, x in d.items() if p != "stock"), None)
        if s is None or o is None:
            continue
        sp = f"{s['us'] / o['us']:.2f}×" if s["us"] and o["us"] else "—"
        fmt = lambda x: "—" if x is None else f"{x:.1f}"  # noqa: E731
        lines.append(f"| {bucket} | {H} | {lens} | {s['real_chunks']} / {s['max_chunks']} | {fmt(s['us'])} | "
                     f"{fmt(o['us'])} | {sp} | {s['o_err']:.2e} / {o['o_err']:.2e} | "
                     f"{s['state_err']:.2e} / {o['state_err']:.2e} |")
    profiled = [r for r in rows if r.get("kernels")]
    if profiled:  # --profile: each captured path's kernels, µs per replay
        lines += ["", "Kernels per replay (`--profile`, µs):", ""]
        for r in profiled:
            ks = sorted(r["kernels"].items(), key=lambda x: -x[1])
            lines.append(f"- {r['bucket']} H={r['H']} {r['lens']} {r['path']}: "
                         + "; ".join(f"{k} {v:.1f}" for k, v in ks))
    return lines


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", default="bench/results/latest-kda-graph")
    ap.add_argument("--cases", type=parse_cases, default=None, help=f"default {CASES}")
    ap.add_argument("--method", default="blockdoubling")
    ap.add_argument("--profile", action="store_true", help="also each captured path's kernels (torch.profiler)")
    ap.add_argument("--gate", choices=GATES, default="fused",
                    help="fused: Kimi-Linear's raw gate + A_log/dt_bias and raw β (default); activated: as in s30")
    ap.add_argument("--smoke", action="store_true", help="CPU + Triton interpreter, eager, tiny shapes")


def run(args) -> int:
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("bench kda-graph needs a GPU (or --smoke)", file=sys.stderr)
        return 2
    cases = args.cases or parse_cases(SMOKE_CASES if args.smoke else CASES)
    K = 16 if args.smoke else 128
    meta = common.run_meta(device, dtype="bfloat16" if device == "cuda" else "float32", K=K,
                           max_seqs_cap=MAX_SEQS_CAP, gate=args.gate)
    rows: list = []
    os.makedirs(args.out, exist_ok=True)
    for bucket, H, lens in cases:
        run_case(bucket, H, lens, rows, device, args.method, K, args.profile, args.gate)
        common.save_results(args.out, "kda_graph", meta, rows)  # each case as it finishes
        if device == "cuda":
            torch.cuda.empty_cache()
    return common.write_report(args.out, "kda_graph", meta, rows, to_markdown(meta, rows))


def main(argv=None) -> int:
    return common.cli_main(__doc__, add_arguments, run, argv, prog="sglang-trinv bench kda-graph")


if __name__ == "__main__":
    sys.exit(main())

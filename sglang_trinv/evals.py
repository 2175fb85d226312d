"""``sglang-trinv eval``: end-to-end quality of each ``(I + A)^{-1}`` method vs stock on a real model.

Why: kernel-level errors (``stability``) do not say whether a method changes what a model *predicts*. This
loads a Qwen3-Next checkpoint with transformers and swaps the chunked gated-delta-rule function of
``transformers.models.qwen3_next.modeling_qwen3_next`` (looked up as a module global on every forward):

* ``--backend reference`` (CPU default): the same chunked math as transformers' torch fallback, but
  ``(I + A)^{-1}`` comes from :func:`sglang_trinv.registry.invert` with emulated GPU precision. ``stock``
  = ``forward_substitution`` at tf32 (SGLang's kernel: 16×16 substitution + tf32 merges); ``exact`` = fp64
  triangular solve. Everything else stays fp32, so differences are the inversion's alone.
* ``--backend sglang`` (CUDA): SGLang's own Triton ``chunk_gated_delta_rule`` (bf16), stock or patched by
  :func:`sglang_trinv.plugin.patch` with our kernel.

Metrics per method: perplexity on held-out text (Δ vs stock), mean KL(stock ‖ method) and top-1 agreement of
the next-token distributions, multiple-choice accuracy by log-likelihood (JSONL), synthetic passkey
retrieval at several depths, a stress prompt (one token repeated: identical keys), wall time. Reports:
``report.md``, ``report.json``, ``report.png``; ``--fail-if-worse`` turns thresholds into an exit code.
Server mode (``--launch`` one SGLang server per method, or ``--server-url METHOD=URL`` for running ones;
:mod:`sglang_trinv.evals_server`) runs the same measurements and tasks through SGLang's ``/generate`` instead.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .evals_data import load_corpus, python_version, token_stream, token_windows

STOCK = "stock"
EXACT = "exact"
HF_QWEN3_NEXT = "transformers.models.qwen3_next.modeling_qwen3_next"
HF_CHUNK_FN = "torch_chunk_gated_delta_rule"


def _shipped(rel: str) -> Path:
    """evals/<rel> of a checkout (editable install), else the copy the wheel carries (sglang_trinv/shipped/<rel>)."""
    here = Path(__file__).resolve().parent
    repo = here.parent / "evals" / rel
    return repo if repo.exists() else here / "shipped" / rel


DEFAULT_MODEL = _shipped("models/qwen3-next-tiny-stdlib")
DEFAULT_MC = _shipped("tasks/stdlib_mc.jsonl")
DEFAULT_METHODS = "stock,exact,blockdoubling,forward_substitution,column_sweep,neumann,newton_schulz,hybrid"


# ------------------------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class MethodSpec:
    """One column of the report: ``label`` as typed (``neumann@fp16``), the registry method, its precision."""

    label: str
    method: str  # "stock", "exact" or a registry name
    precision: str | None

    def describe(self, backend: str) -> str:
        if backend == "sglang":
            return "SGLang's Triton kernel" if self.method == STOCK else \
                f"our Triton kernel ({self.method}, {self.precision or 'default precision'})"
        if self.method == STOCK:
            return "forward_substitution @ tf32 (stock algorithm)"
        if self.method == EXACT:
            return "fp64 triangular solve"
        return f"{self.method} @ {self.precision}"


def parse_methods(text: str, backend: str = "reference") -> list[MethodSpec]:
    """``"stock,blockdoubling,neumann@fp16"`` → specs; ``stock`` is always first (the baseline)."""
    from .registry import check_precision, get_method

    specs: list[MethodSpec] = []
    for label in [t.strip() for t in text.split(",") if t.strip()]:
        name, _, prec = label.partition("@")
        if name in (STOCK, EXACT):
            if prec:
                raise ValueError(f"{label!r}: {name} takes no @precision")
            if name == EXACT and backend == "sglang":
                raise ValueError("'exact' exists only for the reference backend")
            specs.append(MethodSpec(label, name, "tf32" if name == STOCK and backend == "reference" else None))
            continue
        m = get_method(name)  # ValueError listing the choices for an unknown name
        if prec:
            check_precision(prec)
            if "/" in prec and backend == "reference":
                raise ValueError(f"{label!r}: DIAG/MERGE precisions are for the kernels (--backend sglang)")
        specs.append(MethodSpec(label, name, prec or (m.default_precision if backend == "reference" else None)))
    if not specs:
        raise ValueError("no methods given")
    if len({s.label for s in specs}) != len(specs):
        raise ValueError(f"duplicate methods in {text!r}")
    if specs[0].method != STOCK:
        specs = [s for s in specs if s.method != STOCK]
        specs.insert(0, parse_methods(STOCK, backend)[0])
    return specs


def _inverter(spec: MethodSpec):
    """``A [..., n, n] (strictly lower) -> (I + A)^{-1}`` in fp32 for a reference-backend spec."""
    from .reference.inverse import exact_inverse
    from .registry import invert

    if spec.method == EXACT:
        return lambda A: exact_inverse(A).to(A.dtype)
    method = "forward_substitution" if spec.method == STOCK else spec.method
    return lambda A: invert(A, method, spec.precision)


@dataclass
class HookStats:
    """What the swapped function saw: calls, chunks inverted, non-finite inverse entries, max |inverse|,
    max |A| (how far from the identity the systems are: the growth of Neumann-type methods follows it).
    The two maxima stay None where the matrices are not observable (SGLang's fused GPU kernels keep A and
    its inverse on chip), so reports print "–" rather than a made-up 0."""

    calls: int = 0
    chunks: int = 0
    nonfinite: int = 0
    max_abs_inverse: float | None = None
    max_abs_A: float | None = None


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def reference_chunk_gated_delta_rule(invert_fn, stats: HookStats | None = None):
    """Drop-in for transformers' ``torch_chunk_gated_delta_rule`` with ``(I + A)^{-1}`` from ``invert_fn``.

    Same chunked algorithm and fp32 arithmetic as transformers' fallback (which solves the unit lower
    triangular system exactly); only the inversion differs. ``A = tril(diag(β)·KKᵀ ⊙ e^{gᵢ−gⱼ}, −1)`` is
    the matrix SGLang's ``chunk_gated_delta_rule_fwd_intra`` inverts (cf. :mod:`sglang_trinv.reference.gdn`)."""

    def chunk_gated_delta_rule(query, key, value, g, beta, chunk_size=64, initial_state=None,
                               output_final_state=False, use_qk_l2norm_in_kernel=False, **kwargs):
        out_dtype = query.dtype
        B, T, _, K = key.shape
        H, V = value.shape[-2:]
        q, k, v, b, gg = (x.transpose(1, 2).to(torch.float32).contiguous() for x in (query, key, value, beta, g))
        if use_qk_l2norm_in_kernel:
            q = q * torch.rsqrt((q * q).sum(-1, keepdim=True) + 1e-6)
            k = k * torch.rsqrt((k * k).sum(-1, keepdim=True) + 1e-6)
        q = q * K ** -0.5
        pad = (chunk_size - T % chunk_size) % chunk_size
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        b, gg = (F.pad(x, (0, pad)) for x in (b, gg))
        N = (T + pad) // chunk_size
        q, k, v = (x.reshape(B, H, N, chunk_size, x.shape[-1]) for x in (q, k, v))
        b, gg = b.reshape(B, H, N, chunk_size), gg.reshape(B, H, N, chunk_size).cumsum(-1)
        causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device).tril()
        decay = (gg[..., :, None] - gg[..., None, :]).masked_fill(~causal, float("-inf")).exp()
        k_beta = k * b[..., None]
        A = torch.tril((k_beta @ k.transpose(-1, -2)) * decay, -1)
        Ai = invert_fn(A)
        if stats is not None:
            stats.calls += 1
            stats.chunks += Ai.shape[0] * Ai.shape[1] * Ai.shape[2]
            stats.max_abs_A = _max(stats.max_abs_A, float(A.abs().max()))
            finite = torch.isfinite(Ai)
            stats.nonfinite += int((~finite).sum())
            if finite.any():
                stats.max_abs_inverse = _max(stats.max_abs_inverse, float(Ai[finite].abs().max()))
        u = Ai @ (v * b[..., None])  # new values
        w = Ai @ (k_beta * gg.exp()[..., None])  # decayed keys reading the old state
        attn = (q @ k.transpose(-1, -2)) * decay
        qd = q * gg.exp()[..., None]
        kd = k * (gg[..., -1:] - gg).exp()[..., None]
        state = (torch.zeros(B, H, K, V, dtype=torch.float32, device=q.device) if initial_state is None
                 else initial_state.to(torch.float32))
        out = torch.empty_like(u)
        for i in range(N):
            v_new = u[:, :, i] - w[:, :, i] @ state
            out[:, :, i] = qd[:, :, i] @ state + attn[:, :, i] @ v_new
            state = state * gg[:, :, i, -1].exp()[..., None, None] + kd[:, :, i].transpose(-1, -2) @ v_new
        out = out.reshape(B, H, N * chunk_size, V)[:, :, :T].transpose(1, 2).contiguous().to(out_dtype)
        return out, (state if output_final_state else None)

    return chunk_gated_delta_rule


def sglang_chunk_gated_delta_rule(stats: HookStats | None = None):
    """Drop-in that runs SGLang's Triton ``chunk_gated_delta_rule`` (CUDA, bf16): stock, or ours while
    :func:`sglang_trinv.plugin.patch` is active (it rebinds the intra-chunk step inside SGLang's module)."""
    try:
        chunk = importlib.import_module("sglang.kernels.ops.attention.fla.chunk")
    except ImportError as e:
        raise RuntimeError(f"--backend sglang needs SGLang's FLA kernels ({e}); use --backend reference") from None

    def chunk_gated_delta_rule(query, key, value, g, beta, chunk_size=64, initial_state=None,
                               output_final_state=False, use_qk_l2norm_in_kernel=False, **kwargs):
        B, T, H, K = key.shape
        V = value.shape[-1]
        # SGLang keeps states as [N, H, V, K] (transformers: [B, H, K, V]) and updates them in place
        state = (torch.zeros(B, H, V, K, dtype=torch.float32, device=key.device) if initial_state is None
                 else initial_state.transpose(-1, -2).to(torch.float32).contiguous())
        dt = torch.bfloat16 if query.dtype == torch.float32 else query.dtype
        o = chunk.chunk_gated_delta_rule(
            query.to(dt), key.to(dt), value.to(dt), g.to(torch.float32), beta.to(dt),
            initial_state=state, initial_state_indices=torch.arange(B, device=key.device),
            use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel)[0]  # (o, None, h)
        if stats is not None:
            stats.calls += 1
            stats.chunks += B * H * math.ceil(T / 64)
        return o.to(query.dtype), (state.transpose(-1, -2) if output_final_state else None)

    return chunk_gated_delta_rule


@contextlib.contextmanager
def gdn_inversion(spec: MethodSpec, backend: str = "reference"):
    """While active, every Qwen3-Next GDN chunk prefill in this process uses ``spec``; yields its stats."""
    mod = importlib.import_module(HF_QWEN3_NEXT)
    original = getattr(mod, HF_CHUNK_FN)
    stats = HookStats()
    if backend == "reference":
        fn = reference_chunk_gated_delta_rule(_inverter(spec), stats)
    elif backend == "sglang":
        from . import plugin

        if spec.method == STOCK:
            plugin.unpatch()
        else:
            plugin.patch(spec.method, spec.precision)
        fn = sglang_chunk_gated_delta_rule(stats)
    else:
        raise ValueError(f"unknown backend {backend!r}")
    setattr(mod, HF_CHUNK_FN, fn)
    try:
        yield stats
    finally:
        setattr(mod, HF_CHUNK_FN, original)
        if backend == "sglang":
            from . import plugin

            plugin.unpatch()


# ------------------------------------------------------------------------------------------- model
def load_model(path: str | Path, device: str = "cpu", dtype: torch.dtype | None = None):
    """(model, tokenizer) from a local HF folder; clear errors when it is missing or not Qwen3-Next."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    p = Path(path)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"model folder not found or without config.json: {p}")
    cfg = json.loads((p / "config.json").read_text())
    if cfg.get("model_type") != "qwen3_next":
        raise ValueError(f"{p}: model_type {cfg.get('model_type')!r}; the eval hooks Qwen3-Next (qwen3_next) GDN")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    dtype = dtype or (torch.float32 if device == "cpu" else torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(p, dtype=dtype).to(device).eval()
    tok = AutoTokenizer.from_pretrained(p)
    return model, tok


@torch.no_grad()
def logprobs(model, ids: torch.Tensor) -> torch.Tensor:
    """Next-token log-probabilities ``[B, T−1, vocab]`` of a token batch ``[B, T]``, normalized in fp64 so
    KL divergences of ~1e-9 between methods are not round-off of the softmax itself."""
    logits = model(input_ids=ids.to(model.device), use_cache=False).logits[:, :-1]
    return torch.log_softmax(logits.double(), dim=-1).cpu()


# ------------------------------------------------------------------------------------------- tasks
def load_mc(path: str | Path) -> list[dict]:
    """Multiple-choice items from JSONL: ``question``, ``choices`` (list), ``answer`` (index or choice text)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"multiple-choice file not found: {p}")
    items = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            it = json.loads(line)
            q, ch, ans = it["question"], list(it["choices"]), it["answer"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{p}:{n}: expected a JSON object with question, choices, answer ({e})") from None
        idx = ans if isinstance(ans, int) else ch.index(ans) if ans in ch else -1
        if not 0 <= idx < len(ch) or len(ch) < 2:
            raise ValueError(f"{p}:{n}: answer {ans!r} is not one of {len(ch)} choices (need ≥ 2)")
        items.append({"question": q, "choices": ch, "answer": idx})
    if not items:
        raise ValueError(f"multiple-choice file {p} has no items")
    return items


def make_mc_items(docs: list[str], n: int, n_choices: int = 4, seed: int = 0, context_lines: int = 12) -> list[dict]:
    """Next-line multiple choice from held-out code: ``context_lines`` lines of a file, then which of
    ``n_choices`` lines comes next (the true one, the others drawn from other files). Lines with < 12
    non-blank characters and duplicates of the true line are avoided."""
    rng = random.Random(seed)
    per_doc = [d.splitlines() for d in docs]
    pool = [(i, ln) for i, lines in enumerate(per_doc) for ln in lines if len(ln.strip()) >= 12]
    items = []
    tries = 0
    while len(items) < n and tries < 100 * n:
        tries += 1
        i = rng.randrange(len(per_doc))
        lines = per_doc[i]
        if len(lines) <= context_lines + 1:
            continue
        j = rng.randrange(context_lines, len(lines))
        target = lines[j]
        if len(target.strip()) < 12:
            continue
        distractors = set()
        while len(distractors) < n_choices - 1:
            di, dl = pool[rng.randrange(len(pool))]
            if di != i and dl.strip() != target.strip():
                distractors.add(dl)
        choices = [target, *distractors]
        rng.shuffle(choices)
        items.append({"question": "\n".join(lines[j - context_lines:j]) + "\n", "choices": choices,
                      "answer": choices.index(target)})
    return items


def model_scorer(model):
    """``score(ids) -> (log p(ids[t+1] | ids[:t+1]) for t < n−1, argmax token at each of those positions)`` of a
    model in this process; the server mode passes the same thing from SGLang's /generate (evals_server)."""
    def score(ids: list[int]) -> tuple[list[float], list[int]]:
        lp = logprobs(model, torch.tensor([ids]))[0]
        return lp.gather(-1, torch.tensor(ids[1:])[:, None])[:, 0].tolist(), lp.argmax(-1).tolist()
    return score


def mc_predictions(score, tok, items: list[dict]) -> tuple[list[int], list[int], float]:
    """Predicted choice per item by mean log-likelihood per choice token (primary: summed log-likelihood
    favours short choices, measured 0.25 = chance vs 0.42 on the shipped task) and by the sum; wall time.
    ``score``: :func:`model_scorer` or a server's."""
    preds, preds_sum, t = [], [], 0.0
    for it in items:
        q = tok(it["question"], add_special_tokens=False)["input_ids"]
        scores = []
        for c in it["choices"]:
            cid = tok(c, add_special_tokens=False)["input_ids"]
            t0 = time.perf_counter()
            lps, _ = score(q + cid)
            t += time.perf_counter() - t0
            scores.append(float(sum(lps[len(q) - 1:])))
        means = [sc / len(tok(c, add_special_tokens=False)["input_ids"]) for sc, c in zip(scores, it["choices"])]
        preds.append(max(range(len(means)), key=means.__getitem__))
        preds_sum.append(max(range(len(scores)), key=scores.__getitem__))
    return preds, preds_sum, t


def make_passkey_prompts(tok, filler_ids: list[int], lengths, depths, trials: int, seed: int = 0) -> list[dict]:
    """Synthetic retrieval: a line ``PASSKEY = NNNNN`` inserted at ``depth`` of ``length`` tokens of
    held-out code, then ``assert PASSKEY ==`` and the key. Scored teacher-forced: retrieved when every key
    token is the argmax; also the key's mean log-probability and its gain over the same prompt without the
    needle (> 0: the model reads the needle)."""
    rng = random.Random(seed)
    prompts = []
    for L in lengths:
        for d in depths:
            for t in range(trials):
                key = str(rng.randrange(10000, 100000))
                # " NNNNN" is one pre-token of the byte-level BPE in both places: same key tokens
                needle = tok(f"\nPASSKEY = {key}\n", add_special_tokens=False)["input_ids"]
                query = tok("\nassert PASSKEY ==", add_special_tokens=False)["input_ids"]
                answer = tok(f" {key}", add_special_tokens=False)["input_ids"]
                n_fill = max(1, L - len(needle) - len(query) - len(answer))
                start = rng.randrange(0, max(1, len(filler_ids) - n_fill))
                fill = filler_ids[start:start + n_fill]
                cut = int(len(fill) * d)
                ids = fill[:cut] + needle + fill[cut:] + query + answer
                control = fill[:cut] + fill[cut:] + query + answer  # no needle: what the key costs unseen
                prompts.append({"length": L, "depth": d, "key": key, "ids": ids, "control_ids": control,
                                "n_answer": len(answer)})
    return prompts


def passkey_scores(score, prompts: list[dict]) -> tuple[list[dict], float]:
    out, t = [], 0.0
    for p in prompts:
        n = p["n_answer"]
        res = []
        for key in ("ids", "control_ids"):
            ids = p[key]
            t0 = time.perf_counter()
            lps, top1 = score(ids)
            t += time.perf_counter() - t0
            res.append((top1[-n:] == ids[-n:], sum(lps[-n:]) / n))
        out.append({"length": p["length"], "depth": p["depth"], "hit": res[0][0], "key_logprob": res[0][1],
                    "gain": res[0][1] - res[1][1]})
    return out, t


def summarize_passkey(scores: list[dict]) -> dict:
    by = {}
    for sc in scores:
        by.setdefault(f"{sc['length']}@{sc['depth']}", []).append(sc)
    return {
        "accuracy": sum(sc["hit"] for sc in scores) / len(scores),
        "mean_key_logprob": sum(sc["key_logprob"] for sc in scores) / len(scores),
        "mean_gain": sum(sc["gain"] for sc in scores) / len(scores),
        "by_length_depth": {k: {"accuracy": sum(v["hit"] for v in vs) / len(vs),
                                "mean_key_logprob": sum(v["key_logprob"] for v in vs) / len(vs),
                                "mean_gain": sum(v["gain"] for v in vs) / len(vs)}
                            for k, vs in by.items()},
    }


def score_mc(results: list, i: int, preds: list[int], preds_sum: list[int], items: list[dict], base_preds):
    """Fill method i's multiple-choice fields; returns the baseline predictions (method 0's)."""
    results[i].mc_accuracy = sum(p == it["answer"] for p, it in zip(preds, items)) / len(items)
    results[i].mc_accuracy_sum = sum(p == it["answer"] for p, it in zip(preds_sum, items)) / len(items)
    base_preds = base_preds or preds
    results[i].mc_agree = sum(a == b for a, b in zip(preds, base_preds)) / len(preds)
    return base_preds


# ------------------------------------------------------------------------------------------- run
@dataclass
class MethodResult:
    label: str
    description: str
    tokens: int = 0
    nll: float = 0.0
    ppl: float = float("nan")
    ppl_delta: float = 0.0  # ppl − ppl(stock)
    ppl_rel_delta: float = 0.0
    kl_mean: float = 0.0  # mean over positions of KL(stock ‖ method), nats
    kl_max: float = 0.0
    top1_agree: float = 1.0
    max_abs_logprob_diff: float = 0.0
    nonfinite_logits: int = 0
    mc_accuracy: float | None = None
    mc_agree: float | None = None
    mc_accuracy_sum: float | None = None
    passkey: dict = field(default_factory=dict)
    stress: dict = field(default_factory=dict)
    lm_eval: dict = field(default_factory=dict)  # server mode, --lm-eval: {task: {metric: value, …_stderr: se}}
    seconds: float = 0.0
    hook: dict = field(default_factory=dict)


def _compare(base: torch.Tensor, lp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Per-position KL(base ‖ lp), top-1 agreement mask, max |Δ log p| (NaN-safe)."""
    base, lp = base.double(), lp.double()  # fp64: tiny KLs must not drown in round-off
    kl = (base.exp() * (base - lp)).sum(-1)
    kl = torch.where(torch.isfinite(kl), kl, torch.full_like(kl, float("inf")))
    agree = base.argmax(-1) == lp.argmax(-1)
    diff = (base - lp).abs()
    mx = float(diff.max()) if torch.isfinite(diff).all() else float("inf")
    return kl, agree, mx


def evaluate(model, tok, specs: list[MethodSpec], docs: list[str], *, ctx: int = 512,
             max_tokens: int | None = None, backend: str = "reference", mc_items: list[dict] | None = None,
             passkey: dict | None = None, stress_len: int = 256, progress: bool = True) -> list[MethodResult]:
    """Run every method over the same windows/items and compare each with ``specs[0]`` (stock)."""
    from tqdm.auto import tqdm

    ids = token_stream(tok, docs)
    windows = token_windows(ids, ctx, max_tokens)
    if not windows:
        raise ValueError("corpus too short: no window of ≥ 2 tokens")
    results = [MethodResult(s.label, s.describe(backend)) for s in specs]
    hooks = [HookStats() for _ in specs]
    kl_sum = [0.0] * len(specs)
    agree_sum = [0] * len(specs)
    for win in tqdm(windows, desc="perplexity", unit="win", disable=not progress):
        x = torch.tensor([win])
        tgt = x[0, 1:, None]
        base = None
        for i, s in enumerate(specs):
            t0 = time.perf_counter()
            with gdn_inversion(s, backend) as st:
                lp = logprobs(model, x)[0]
            r = results[i]
            r.seconds += time.perf_counter() - t0
            _merge(hooks[i], st)
            r.nonfinite_logits += int((~torch.isfinite(lp)).sum())
            r.nll += float(-lp.gather(-1, tgt).sum())
            r.tokens += len(win) - 1
            if i == 0:
                base = lp
                continue
            kl, agree, mx = _compare(base, lp)
            kl_sum[i] += float(kl.sum())
            r.kl_max = max(r.kl_max, float(kl.max()))
            agree_sum[i] += int(agree.sum())
            r.max_abs_logprob_diff = max(r.max_abs_logprob_diff, mx)
    for i, r in enumerate(results):
        r.ppl = math.exp(r.nll / r.tokens) if math.isfinite(r.nll) else float("inf")
        r.kl_mean = kl_sum[i] / r.tokens
        r.top1_agree = agree_sum[i] / r.tokens if i else 1.0
        r.ppl_delta = r.ppl - results[0].ppl
        r.ppl_rel_delta = r.ppl_delta / results[0].ppl

    score = model_scorer(model)
    if mc_items:
        base_preds = None
        for i, s in enumerate(tqdm(specs, desc="multiple choice", disable=not progress)):
            with gdn_inversion(s, backend) as st:
                preds, preds_sum, t = mc_predictions(score, tok, mc_items)
            _merge(hooks[i], st)
            results[i].seconds += t
            base_preds = score_mc(results, i, preds, preds_sum, mc_items, base_preds)

    if passkey:
        prompts = make_passkey_prompts(tok, ids, passkey["lengths"], passkey["depths"], passkey["trials"],
                                       passkey.get("seed", 0))
        for i, s in enumerate(tqdm(specs, desc="passkey", disable=not progress)):
            with gdn_inversion(s, backend) as st:
                scores, t = passkey_scores(score, prompts)
            _merge(hooks[i], st)
            results[i].seconds += t
            results[i].passkey = summarize_passkey(scores)

    if stress_len:
        stress = stress_prompts(tok, stress_len)
        base = {}
        for i, s in enumerate(specs):
            out = {}
            for name, sids in stress.items():
                with gdn_inversion(s, backend) as st:
                    lp = logprobs(model, torch.tensor([sids]))[0]
                if i == 0:
                    base[name] = lp
                kl, agree, mx = _compare(base[name], lp)
                out[name] = {"kl_mean": float(kl.mean()), "top1_agree": float(agree.float().mean()),
                             "max_abs_logprob_diff": mx, "nonfinite_logits": int((~torch.isfinite(lp)).sum()),
                             "max_abs_inverse": st.max_abs_inverse, "max_abs_A": st.max_abs_A}
            results[i].stress = out
    for r, h in zip(results, hooks):
        r.hook = asdict(h)
    return results


def stress_prompts(tok, n: int) -> dict[str, list[int]]:
    """Inputs that make keys identical or periodic (the Neumann/Newton–Schulz worst case: A⁸ grows like
    binomials when consecutive keys coincide and gates are near 1)."""
    one = tok("x", add_special_tokens=False)["input_ids"][:1]
    line = tok("self.assertEqual(x, y)\n", add_special_tokens=False)["input_ids"]
    return {"repeat_token": (one * n)[:n], "repeat_line": (line * (n // len(line) + 1))[:n]}


def _merge(total: HookStats, st: HookStats) -> None:
    total.calls += st.calls
    total.chunks += st.chunks
    total.nonfinite += st.nonfinite
    total.max_abs_inverse = _max(total.max_abs_inverse, st.max_abs_inverse)
    total.max_abs_A = _max(total.max_abs_A, st.max_abs_A)


# ------------------------------------------------------------------------------------------- thresholds
@dataclass(frozen=True)
class Thresholds:
    max_ppl_rel_increase: float = 0.005  # perplexity may rise by 0.5 % over stock
    max_kl: float = 1e-3  # mean KL(stock ‖ method), nats/token
    min_top1: float = 0.99
    max_task_drop: float = 0.05  # accuracy points below stock (MC and passkey)


def breaches(results: list[MethodResult], th: Thresholds, skip: tuple[str, ...] = ()) -> list[str]:
    """Human-readable threshold violations of every non-stock method (NaN/inf count as violations)."""
    out = []
    base = results[0]
    for r in results[1:]:
        if r.label in skip:
            continue

        def bad(ok: bool, what: str):
            if not ok:
                out.append(f"{r.label}: {what}")

        bad(math.isfinite(r.ppl) and r.ppl_rel_delta <= th.max_ppl_rel_increase,
            f"perplexity {r.ppl:.4f} vs stock {base.ppl:.4f} ({100 * r.ppl_rel_delta:+.3f} % > "
            f"{100 * th.max_ppl_rel_increase:.3f} %)")
        bad(math.isfinite(r.kl_mean) and r.kl_mean <= th.max_kl, f"mean KL {r.kl_mean:.3g} > {th.max_kl:g}")
        bad(r.top1_agree >= th.min_top1, f"top-1 agreement {r.top1_agree:.4f} < {th.min_top1}")
        bad(r.nonfinite_logits == 0, f"{r.nonfinite_logits} non-finite logits")
        if r.mc_accuracy is not None:
            bad(r.mc_accuracy >= base.mc_accuracy - th.max_task_drop,
                f"multiple-choice accuracy {r.mc_accuracy:.3f} vs stock {base.mc_accuracy:.3f}")
        if r.passkey:
            bad(r.passkey["accuracy"] >= base.passkey["accuracy"] - th.max_task_drop,
                f"passkey accuracy {r.passkey['accuracy']:.3f} vs stock {base.passkey['accuracy']:.3f}")
    return out


# ------------------------------------------------------------------------------------------- reports
def write_reports(out_dir: Path, meta: dict, results: list[MethodResult], violations: list[str] | None) -> dict:
    """``report.json``, ``report.md``, ``report.png`` in ``out_dir``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {"meta": meta, "results": [asdict(r) for r in results], "breaches": violations}
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md", "png": out_dir / "report.png"}
    paths["json"].write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    paths["md"].write_text(_markdown(meta, results, violations))
    _plot(results, paths["png"], meta)
    return paths


def _json_default(x):
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return str(x)


def _fmt(x, spec=".4f"):
    if x is None:
        return "–"
    return format(x, spec) if isinstance(x, (int, float)) and math.isfinite(x) else str(x)


def _markdown(meta: dict, results: list[MethodResult], violations) -> str:
    base = results[0]
    L = [f"# sglang-trinv eval: {meta['model_name']}", "",
         f"- model: `{meta['model']}` (" + ("served" if meta["backend"] == "server" else
                                              f"{meta['params'] / 1e6:.2f} M params, {meta['model_dtype']}") + "); "
         f"backend **{meta['backend']}** on {meta['device']}",
         f"- corpus: {meta['corpus']}; {base.tokens:,} scored tokens in windows of {meta['ctx']} "
         f"({meta['windows']} windows)",
         f"- baseline: `{base.label}` = {base.description}",
         f"- Python {meta['python']}, torch {meta['torch']}, transformers {meta['transformers']}; "
         f"{meta['threads']} CPU thread(s); total {meta['seconds']:.0f} s", ""]
    if meta["backend"] == "server":
        L += [f"Server mode: KL columns are lower bounds of KL(stock ‖ method) in nats, from each position's "
              f"two distributions coarsened to the tokens in both top-{meta.get('server_topk')} lists plus the "
              "rest (SGLang's /generate returns no full distributions); max abs Δlogp is over the text's tokens.",
              ""]
    if meta["backend"] == "reference":
        L += ["Reference backend: the GDN chunk math of transformers' torch fallback in fp32; only "
              "`(I + A)^{-1}` changes (registry method with emulated GPU precision). KL = mean over "
              "positions of KL(stock ‖ method) in nats.", ""]
    L += ["## Perplexity and agreement with stock", "",
          "| method | inversion | ppl | Δppl | Δppl % | mean KL | max KL | top-1 agree | max abs Δlogp | non-finite | time (s) |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        L.append(f"| `{r.label}` | {r.description} | {_fmt(r.ppl)} | {_fmt(r.ppl_delta, '+.2e')} | "
                 f"{_fmt(100 * r.ppl_rel_delta, '+.2e')} | {_fmt(r.kl_mean, '.2e')} | {_fmt(r.kl_max, '.2e')} | "
                 f"{_fmt(r.top1_agree, '.5f')} | {_fmt(r.max_abs_logprob_diff, '.2e')} | {r.nonfinite_logits} | "
                 f"{r.seconds:.1f} |")
    if backend_is_reference(meta):
        h = base.hook
        L += ["", f"Systems seen on the corpus and tasks ({h['chunks']:,} chunk×head matrices): max |A| = "
              f"{_fmt(h['max_abs_A'], '.3g')}, max |(I + A)^{{-1}}| (stock) = {_fmt(h['max_abs_inverse'], '.3g')}."]
    if base.mc_accuracy is not None or base.passkey:
        L += ["", "## Tasks", ""]
        if base.mc_accuracy is not None:
            L.append(f"Multiple choice: {meta['mc']['source']} ({meta['mc']['items']} items, "
                     f"{meta['mc']['choices']} choices, chance {1 / meta['mc']['choices']:.2f}); "
                     "prediction = highest mean log-likelihood per choice token (\"sum\": summed).")
        if base.passkey:
            pk = meta["passkey"]
            L.append(f"Passkey: `PASSKEY = NNNNN` at depths {pk['depths']} of {pk['lengths']}-token prompts "
                     f"of held-out code, {pk['trials']} trials each; hit = every key token is the argmax "
                     "(teacher-forced); gain = key log p per token with the needle minus without it.")
        n_mc = (meta.get("mc") or {}).get("items") or 0
        pk = meta.get("passkey") or {}
        n_pk = len(pk.get("lengths", [])) * len(pk.get("depths", [])) * pk.get("trials", 0)

        def acc(x, x0, n, first):
            """accuracy ± 95% normal interval (n items), and Δ vs the first method"""
            if x is None or not n:
                return _fmt(x, ".3f")
            ci = 1.96 * math.sqrt(max(x * (1 - x), 0.0) / n)
            return f"{x:.3f} ± {ci:.3f}" + ("" if first else f" (Δ {x - x0:+.3f})")

        L += ["", "Accuracies: ± 95% interval over the items; Δ vs the first method.",
              "", "| method | MC accuracy | MC accuracy (sum) | MC agree w/ stock | passkey accuracy | "
              "passkey mean key log p | passkey gain |", "|---|---|---|---|---|---|---|"]
        for r in results:
            first = r is results[0]
            L.append(f"| `{r.label}` | {acc(r.mc_accuracy, base.mc_accuracy, n_mc, first)} | "
                     f"{acc(r.mc_accuracy_sum, base.mc_accuracy_sum, n_mc, first)} | "
                     f"{_fmt(r.mc_agree, '.3f')} | "
                     f"{acc(r.passkey.get('accuracy'), base.passkey.get('accuracy'), n_pk, first)} | "
                     f"{_fmt(r.passkey.get('mean_key_logprob'), '.3f')} | {_fmt(r.passkey.get('mean_gain'), '+.3f')} |")
        if base.passkey:
            keys = list(base.passkey["by_length_depth"])
            L += ["", "Passkey accuracy / gain by length@depth:", "",
                  "| method | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
            for r in results:
                by = r.passkey.get("by_length_depth", {})
                L.append(f"| `{r.label}` | " + " | ".join(
                    f"{_fmt(by.get(k, {}).get('accuracy'), '.2f')} / {_fmt(by.get(k, {}).get('mean_gain'), '+.2f')}"
                    for k in keys) + " |")
    if base.stress:
        names = list(base.stress)
        L += ["", "## Stress prompts (identical / periodic keys)", "",
              f"{meta['stress_len']} tokens: " + ", ".join(f"`{n}`" for n in names) +
              ". KL and top-1 vs stock on the same prompt; max abs inverse = largest entry of the computed "
              "`(I + A)^{-1}` (the exact inverse's is in the `exact` row, when run); max abs A = largest entry of A "
              "(\"–\": not observable, SGLang's fused GPU kernels keep both on chip).", "",
              "| method | " + " | ".join(f"{n}: KL / top-1 / max abs inverse" for n in names) + " |",
              "|---|" + "---|" * len(names)]
        for r in results:
            cells = [f"{_fmt(r.stress[n]['kl_mean'], '.2e')} / {_fmt(r.stress[n]['top1_agree'], '.3f')} / "
                     f"{_fmt(r.stress[n]['max_abs_inverse'], '.3g')}" for n in names]
            if r is results[0]:
                cells = [c + f" (max abs A {_fmt(r.stress[n]['max_abs_A'], '.3g')})" for c, n in zip(cells, names)]
            L.append(f"| `{r.label}` | " + " | ".join(cells) + " |")
    if any(r.lm_eval for r in results):
        from .evals_lmeval import markdown as lm_eval_markdown

        L += [""] + lm_eval_markdown(results)
    if violations is not None:
        th = meta["thresholds"]
        L += ["", "## --fail-if-worse", "",
              f"Thresholds: Δppl ≤ {100 * th['max_ppl_rel_increase']:.3f} %, mean KL ≤ {th['max_kl']:g}, "
              f"top-1 ≥ {th['min_top1']}, task accuracy drop ≤ {th['max_task_drop']}, no non-finite logits"
              + (f"; not checked: {', '.join(meta['fail_skip'])}" if meta.get("fail_skip") else "") + ".", ""]
        L += [f"- BREACH {v}" for v in violations] or ["- all checked methods within thresholds"]
    L += ["", "![chart](report.png)", ""]
    return "\n".join(L)


def backend_is_reference(meta: dict) -> bool:
    return meta.get("backend") == "reference"


def _plot(results: list[MethodResult], path: Path, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter

    others = results[1:]
    labels = [r.label for r in others]
    panels = [
        ("|Δ perplexity| vs stock (%)", [abs(100 * r.ppl_rel_delta) for r in others]),
        ("mean KL(stock ‖ method) (nats)", [r.kl_mean for r in others]),
        ("top-1 disagreement with stock", [1 - r.top1_agree for r in others]),
    ]
    stress = results[0].stress.get("repeat_token")
    if stress is not None:
        panels.append(("stress (one token repeated):\nmean KL vs stock (nats)",
                       [r.stress["repeat_token"]["kl_mean"] for r in others]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), max(3.0, 0.45 * len(labels) + 1.6)))
    for ax, (title, vals) in zip(axes, panels):
        shown = [v if math.isfinite(v) else float("nan") for v in vals]
        pos = [v for v in shown if v == v and v > 0]
        floor = min(pos) / 10 if pos else 1e-12
        top = max(pos) if pos else 1e-11
        ax.barh(labels, [max(v, floor) if v == v else top * 10 for v in shown],
                color=["tab:red" if v != v else "tab:blue" for v in shown])
        for y, v in enumerate(vals):
            ax.text(max(v, floor) if math.isfinite(v) else top * 10, y, f" {v:.2g}", va="center", fontsize=8)
        ax.set_xscale("log")
        ax.set_xlim(floor / 2, top * 1000)  # ≥ 3 decades: readable ticks, room for the labels
        ax.xaxis.set_major_locator(LogLocator(base=10, numticks=6))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(title, fontsize=10)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{meta['model_name']} ({meta['backend']} backend, {results[0].tokens:,} tokens): each method vs "
                 "stock (0 drawn at the axis floor; red: non-finite)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "--model-path", dest="model", default=str(DEFAULT_MODEL),
                   help="HF folder of a Qwen3-Next model (default: the shipped tiny model); server mode: the served "
                        "model (its tokenizer; with --launch, what each server loads)")
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help="comma list: stock, exact (fp64, reference only), registry names, NAME@PRECISION")
    p.add_argument("--backend", choices=("auto", "reference", "sglang"), default="auto",
                   help="auto: sglang on CUDA, reference on CPU")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--corpus", default=None, help="perplexity text: file, folder, .jsonl (text field) or stdlib-heldout (default)")
    p.add_argument("--ctx", type=int, default=512, help="window length in tokens")
    p.add_argument("--max-tokens", type=int, default=None, help="use only the first N corpus tokens")
    p.add_argument("--mc", default=None, help=f"multiple-choice JSONL (default: {DEFAULT_MC.name} when the model is the shipped one)")
    p.add_argument("--mc-limit", type=int, default=None)
    p.add_argument("--no-tasks", action="store_true", help="perplexity/KL only")
    p.add_argument("--passkey-lengths", default="128,512,1024")
    p.add_argument("--passkey-depths", default="0.1,0.5,0.9")
    p.add_argument("--passkey-trials", type=int, default=3)
    p.add_argument("--stress-len", type=int, default=256, help="0 disables the stress prompts")
    p.add_argument("--out", default=None, help="report folder (default evals/results/<model>-<backend>)")
    p.add_argument("--lm-eval", default=None, metavar="TASKS",
                   help="server mode: lm-evaluation-harness tasks through each server (comma list; 'stdlib_mc' is "
                        "built in; needs the lm-eval extra)")
    p.add_argument("--lm-eval-limit", type=int, default=None, help="examples per lm-eval task")
    p.add_argument("--lm-eval-include", default=None, help="a folder of your own lm-eval task YAMLs")
    p.add_argument("--server-topk", type=int, default=20,
                   help="server mode: top-k log-probs per position requested for the KL lower bounds")
    p.add_argument("--server-url", action="append", default=[], metavar="METHOD=URL",
                   help="server mode: a running SGLang server per method (repeat), e.g. stock=http://127.0.0.1:30000")
    p.add_argument("--launch", action="store_true",
                   help="server mode: start one SGLang server per --methods entry (python -m sglang.launch_server "
                        "--model-path MODEL --linear-attn-inv METHOD [--linear-attn-inv-precision P] SERVER_ARGS), one "
                        "after the other; each is stopped after its turn, also on failure or Ctrl-C")
    p.add_argument("--server-args", default="", help="--launch: extra sglang.launch_server arguments, one string")
    p.add_argument("--startup-timeout", type=float, default=900.0, help="--launch: seconds to wait for each server")
    p.add_argument("--server-python", default=sys.executable, help="--launch: interpreter that runs the servers")
    p.add_argument("--host", default="127.0.0.1", help="--launch: address the servers bind")
    p.add_argument("--launch-module", default="sglang.launch_server", help=argparse.SUPPRESS)  # tests: stand-in
    p.add_argument("--fail-on-log", action=argparse.BooleanOptionalAction, default=True,
                   help="--launch: exit 1 when a server's log does not show the method it was started with")
    p.add_argument("--fail-if-worse", action="store_true", help="exit 1 when a method breaches a threshold")
    p.add_argument("--fail-skip", default="", help="methods not checked by --fail-if-worse (e.g. known-unstable ones)")
    p.add_argument("--max-ppl-increase", type=float, default=Thresholds.max_ppl_rel_increase, help="relative")
    p.add_argument("--max-kl", type=float, default=Thresholds.max_kl)
    p.add_argument("--min-top1", type=float, default=Thresholds.min_top1)
    p.add_argument("--max-task-drop", type=float, default=Thresholds.max_task_drop)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--rerender", metavar="REPORT_JSON", help="rewrite report.md/.png from a report.json, no eval")


def rerender(json_path: Path) -> int:
    """Markdown and chart again from a saved ``report.json`` (formatting changes without re-measuring)."""
    if not json_path.is_file():
        raise SystemExit(f"sglang-trinv eval: report not found: {json_path}")
    data = json.loads(json_path.read_text())
    results = [MethodResult(**{k: (float(v) if v in ("inf", "nan", "-inf") else v) for k, v in r.items()})
               for r in data["results"]]
    (json_path.parent / "report.md").write_text(_markdown(data["meta"], results, data["breaches"]))
    _plot(results, json_path.parent / "report.png", data["meta"])
    print(f"rewrote {json_path.parent / 'report.md'} and report.png")
    return 0


def _rel(p) -> str:
    """A path relative to the working directory when inside it (reports stay machine-independent)."""
    try:
        return str(Path(p).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def is_shipped_model(path) -> bool:
    """The shipped model: its folder, or a copy of it (e.g. a checkout's evals/models beside an installed wheel:
    same config and same weights size)."""
    p = Path(path)
    if p.resolve() == DEFAULT_MODEL.resolve():
        return True
    try:
        return ((p / "config.json").read_bytes() == (DEFAULT_MODEL / "config.json").read_bytes()
                and (p / "model.safetensors").stat().st_size == (DEFAULT_MODEL / "model.safetensors").stat().st_size)
    except OSError:
        return False


def task_config(args: argparse.Namespace):
    """(multiple-choice items or None, their file, passkey settings or None) from the command line; the
    shipped MC task is the default only for the shipped model. Raises FileNotFoundError/ValueError."""
    mc_path = args.mc or (DEFAULT_MC if is_shipped_model(args.model) else None)
    mc_items = load_mc(args.mc) if args.mc else None  # an explicit file must exist even with --no-tasks
    mc_items = None if args.no_tasks or mc_path is None else (mc_items or load_mc(mc_path))[: args.mc_limit]
    passkey = None if args.no_tasks else {
        "lengths": [int(x) for x in args.passkey_lengths.split(",") if x],
        "depths": [float(x) for x in args.passkey_depths.split(",") if x],
        "trials": args.passkey_trials, "seed": args.seed}
    return mc_items, mc_path, passkey


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    th = Thresholds(args.max_ppl_increase, args.max_kl, args.min_top1, args.max_task_drop)
    if args.rerender:
        return rerender(Path(args.rerender))
    if args.server_url or args.launch:
        from .evals_server import run_server_mode

        return run_server_mode(args, th)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    backend = args.backend if args.backend != "auto" else ("sglang" if device.startswith("cuda") else "reference")
    if backend == "sglang" and not device.startswith("cuda"):
        raise SystemExit("--backend sglang needs CUDA (SGLang's Triton kernels); use --backend reference on CPU")
    try:
        specs = parse_methods(args.methods, backend)
        docs, corpus_label = load_corpus(args.corpus)
        model, tok = load_model(args.model, device)
        mc_items, mc_path, passkey = task_config(args)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"sglang-trinv eval: {e}") from None
    t0 = time.time()
    results = evaluate(model, tok, specs, docs, ctx=args.ctx, max_tokens=args.max_tokens, backend=backend,
                       mc_items=mc_items, passkey=passkey, stress_len=args.stress_len, progress=not args.quiet)
    import transformers

    skip = tuple(s.strip() for s in args.fail_skip.split(",") if s.strip())
    meta = {
        "model": _rel(args.model), "model_name": Path(args.model).name,
        "params": sum(p.numel() for p in model.parameters()),
        "model_dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "backend": backend, "device": device, "corpus": corpus_label, "ctx": args.ctx,
        "windows": len(token_windows(token_stream(tok, docs), args.ctx, args.max_tokens)),
        "methods": [asdict(s) for s in specs], "python": python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "threads": args.threads, "seconds": time.time() - t0,
        "mc": None if not mc_items else {"source": _rel(mc_path), "items": len(mc_items),
                                         "choices": len(mc_items[0]["choices"])},
        "passkey": passkey, "stress_len": args.stress_len, "thresholds": asdict(th), "fail_skip": list(skip),
    }
    violations = breaches(results, th, skip) if args.fail_if_worse else None
    out = Path(args.out) if args.out else Path("evals/results") / f"{meta['model_name']}-{backend}"
    paths = write_reports(out, meta, results, violations)
    print(paths["md"].read_text())
    print(f"reports: {', '.join(str(p) for p in paths.values())}")
    if violations:
        print("FAIL: " + "; ".join(violations))
        return 1
    return 0

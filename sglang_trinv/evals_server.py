"""Server mode of ``sglang-trinv eval``: perplexity and top-1 agreement through SGLang's ``/generate``.

Why: the in-process eval swaps one function inside transformers; a served model goes through SGLang's whole
prefill (scheduler, chunked prefill, CUDA graphs, the plugin's patch in the worker processes). One server per
method (``--server-url stock=http://…:30000 --server-url blockdoubling=http://…:30001``, each launched with
``--linear-attn-inv METHOD``), the same token windows sent as ``input_ids`` with
``return_logprob=True, logprob_start_len=0, max_new_tokens=1, top_logprobs_num=K``; SGLang answers
``meta_info.input_token_logprobs = [(None, id₀, _), (log p(id₁ | id₀), id₁, _), …]`` and
``meta_info.input_top_logprobs = [None, [(lp, id, _) × K], …]``. Reported per method vs the first server:
perplexity and its Δ, top-1 agreement, max |Δ log p| of the text's tokens, and KL(first ‖ method) *lower
bounds*: ``/generate`` returns no full distributions, so each position's two distributions are coarsened to
the tokens in both top-K lists plus one "rest" bucket; KL of coarsened distributions never exceeds the true
KL (data-processing inequality), so a bound above a threshold is a real breach.

:func:`serve` is a small stand-in with the same request/response schema that runs a transformers model
in-process (with any reference inversion): tests and CPU-only demos of the client, with real numbers.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch


class ServerError(RuntimeError):
    pass


def parse_server_urls(items: list[str]) -> list[tuple[str, str]]:
    """``["stock=http://h:1", …]`` → ``[("stock", "http://h:1"), …]``, validated, order kept."""
    out = []
    for it in items:
        label, sep, url = it.partition("=")
        if not sep or not label.strip() or not url.startswith(("http://", "https://")):
            raise ValueError(f"--server-url expects METHOD=http://host:port, got {it!r}")
        out.append((label.strip(), url.rstrip("/")))
    if len({label for label, _ in out}) != len(out):
        raise ValueError("duplicate method labels in --server-url")
    return out


def prompt_logprobs(url: str, ids: list[int], timeout: float = 300.0) -> tuple[list[float], list[int | None]]:
    """Log-probabilities of tokens 1…n−1 of ``ids`` and the server's top-1 token at each of those positions."""
    lps, tops = prompt_logprobs_topk(url, ids, 1, timeout)
    return lps, [max(t, key=t.get) if t else None for t in tops]


def prompt_logprobs_topk(url: str, ids: list[int], k: int, timeout: float = 300.0) \
        -> tuple[list[float], list[dict[int, float]]]:
    """Log-probabilities of tokens 1…n−1 of ``ids`` and, at each of those positions, the server's top-``k``
    tokens as ``{token id: log p}``."""
    body = {"input_ids": ids, "return_logprob": True, "logprob_start_len": 0, "top_logprobs_num": k,
            "sampling_params": {"max_new_tokens": 1, "temperature": 0.0}}
    req = urllib.request.Request(f"{url}/generate", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            resp = json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise ServerError(f"{url}/generate: HTTP {e.code}: {e.read()[:500]!r}") from None
    except urllib.error.URLError as e:
        raise ServerError(f"{url}/generate: {e.reason} (is the server running?)") from None
    if isinstance(resp, list):
        resp = resp[0]
    meta = resp.get("meta_info", {})
    itl = meta.get("input_token_logprobs")
    if not itl or len(itl) != len(ids):
        raise ServerError(f"{url}: expected {len(ids)} input_token_logprobs, got "
                          f"{None if itl is None else len(itl)} (logprob_start_len=0 honoured?)")
    lps = [float(e[0]) for e in itl[1:]]
    top = meta.get("input_top_logprobs") or [None] * len(ids)
    return lps, [{int(t[1]): float(t[0]) for t in e} if e else {} for e in top[1:]]


def coarse_kl(p: dict[int, float], q: dict[int, float]) -> float:
    """KL(P ‖ Q) of two next-token distributions coarsened to the tokens in both top-k lists plus the rest
    (log-probabilities in, nats out): a lower bound of the true KL(P ‖ Q)."""
    both = p.keys() & q.keys()
    kl, ps, qs = 0.0, 0.0, 0.0
    for t in both:
        a, b = math.exp(p[t]), math.exp(q[t])
        kl += a * (p[t] - q[t])
        ps, qs = ps + a, qs + b
    rest_p, rest_q = max(1.0 - ps, 0.0), max(1.0 - qs, 1e-30)
    if rest_p > 1e-12:
        kl += rest_p * math.log(rest_p / rest_q)
    return max(kl, 0.0)


def server_scorer(url: str):
    """The server's ``score(ids)`` for the shared task code (:func:`sglang_trinv.evals.model_scorer`'s twin)."""
    return lambda ids: prompt_logprobs(url, ids)


def run_server_mode(args, th) -> int:
    from .evals import (MethodResult, _rel, breaches, make_passkey_prompts, mc_predictions, passkey_scores,
                        score_mc, summarize_passkey, task_config, write_reports)
    from .evals_data import load_corpus, python_version, token_stream, token_windows

    try:
        servers = parse_server_urls(args.server_url)
        docs, corpus_label = load_corpus(args.corpus)
        from transformers import AutoTokenizer

        if not (Path(args.model) / "tokenizer_config.json").is_file():
            raise FileNotFoundError(f"tokenizer of the served model not found in {args.model} (pass --model)")
        tok = AutoTokenizer.from_pretrained(args.model)
        mc_items, mc_path, passkey = task_config(args)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"sglang-trinv eval: {e}") from None
    windows = token_windows(token_stream(tok, docs), args.ctx, args.max_tokens)
    results = [MethodResult(label, f"server {url}") for label, url in servers]
    agree = [0] * len(servers)
    kl_sum = [0.0] * len(servers)
    k = args.server_topk
    from tqdm.auto import tqdm

    t_start = time.time()
    for win in tqdm(windows, desc="server perplexity", unit="win", disable=args.quiet):
        base_lps = base_top = None
        for i, (label, url) in enumerate(servers):
            t0 = time.perf_counter()
            lps, tops = prompt_logprobs_topk(url, win, k)
            r = results[i]
            r.seconds += time.perf_counter() - t0
            r.nll -= sum(lps)
            r.tokens += len(lps)
            r.nonfinite_logits += sum(not math.isfinite(x) for x in lps)
            if i == 0:
                base_lps, base_top = lps, tops
                continue
            top1 = [max(t, key=t.get) if t else None for t in tops]
            agree[i] += sum(bool(t and b) and a == max(b, key=b.get) for a, t, b in zip(top1, tops, base_top))
            r.max_abs_logprob_diff = max([r.max_abs_logprob_diff] + [abs(a - b) for a, b in zip(lps, base_lps)])
            kls = [coarse_kl(b, t) for b, t in zip(base_top, tops) if b and t]
            kl_sum[i] += sum(kls)
            r.kl_max = max([r.kl_max] + kls)
    # tasks: the same code as in-process, scored by each server (multiple choice, passkey retrieval)
    if mc_items:
        base_preds = None
        for i, (label, url) in enumerate(tqdm(servers, desc="multiple choice", disable=args.quiet)):
            preds, preds_sum, t = mc_predictions(server_scorer(url), tok, mc_items)
            results[i].seconds += t
            base_preds = score_mc(results, i, preds, preds_sum, mc_items, base_preds)
    if passkey:
        prompts = make_passkey_prompts(tok, token_stream(tok, docs), passkey["lengths"], passkey["depths"],
                                       passkey["trials"], passkey.get("seed", 0))
        for i, (label, url) in enumerate(tqdm(servers, desc="passkey", disable=args.quiet)):
            scores, t = passkey_scores(server_scorer(url), prompts)
            results[i].seconds += t
            results[i].passkey = summarize_passkey(scores)
    if args.lm_eval:  # EleutherAI's harness against each server's /v1/completions
        from .evals import DEFAULT_MC
        from .evals_lmeval import require_lm_eval, run_tasks

        require_lm_eval()
        tasks = [t.strip() for t in args.lm_eval.split(",") if t.strip()]
        for i, (label, url) in enumerate(servers):
            t0 = time.perf_counter()
            results[i].lm_eval = run_tasks(url, str(args.model), tasks, Path(args.mc or DEFAULT_MC),
                                           args.lm_eval_limit, args.lm_eval_include)
            results[i].seconds += time.perf_counter() - t0
    for i, r in enumerate(results):
        r.ppl = math.exp(r.nll / r.tokens) if math.isfinite(r.nll) else float("inf")
        r.ppl_delta = r.ppl - results[0].ppl
        r.ppl_rel_delta = r.ppl_delta / results[0].ppl
        r.top1_agree = agree[i] / r.tokens if i else 1.0
        r.kl_mean = kl_sum[i] / r.tokens  # lower bounds (top-k coarsening, see the module docstring)
    meta = {"model": _rel(args.model), "model_name": Path(args.model).name, "params": 0, "model_dtype": "server",
            "backend": "server", "device": ", ".join(f"{lab}={url}" for lab, url in servers),
            "corpus": corpus_label, "ctx": args.ctx, "windows": len(windows), "python": python_version(),
            "torch": torch.__version__, "transformers": __import__("transformers").__version__,
            "threads": args.threads, "seconds": time.time() - t_start,
            "mc": None if not mc_items else {"source": _rel(mc_path), "items": len(mc_items),
                                             "choices": len(mc_items[0]["choices"])}, "passkey": passkey,
            "stress_len": 0, "thresholds": asdict(th), "fail_skip": [], "server_topk": k}
    # a KL lower bound above max_kl is a real breach, so every threshold applies as in-process
    violations = breaches(results, th) if args.fail_if_worse else None
    out = Path(args.out) if args.out else Path("evals/results") / f"{meta['model_name']}-server"
    paths = write_reports(out, meta, results, violations)
    print(paths["md"].read_text())
    if violations:
        print("FAIL: " + "; ".join(violations))
        return 1
    return 0


# ------------------------------------------------------------------------------------------- stand-in server
def serve(model_path: str | Path, method: str = "stock", host: str = "127.0.0.1", port: int = 0):
    """Start a thread serving ``/generate`` (SGLang's logprob schema) and ``/health`` from a transformers
    model whose GDN inversion is ``method`` (reference backend). Returns ``(server, url)``;
    ``server.shutdown()`` stops it."""
    from .evals import gdn_inversion, load_model, parse_methods

    model, tok = load_model(model_path, "cpu")
    spec = parse_methods(method)[-1]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):  # quiet
            pass

        def _send(self, code: int, obj) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send(200, {"ok": True}) if self.path in ("/health", "/health_generate") else self._send(404, {})

        def _completions(self, req):
            """OpenAI /v1/completions (SGLang serves it too): prompts as text or token ids, ``echo`` with
            ``logprobs`` (prompt log-probs, top-``logprobs`` per position), greedy ``max_tokens``."""
            prompts = req.get("prompt")
            if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
                prompts = [prompts]
            n_top, n_new = int(req.get("logprobs") or 0), int(req.get("max_tokens", 16))
            choices = []
            for idx, pr in enumerate(prompts):
                ids = tok(pr, add_special_tokens=False)["input_ids"] if isinstance(pr, str) else list(pr)
                new, lps, tops = [], [None], [None]
                for step in range(max(n_new, 0) + 1):
                    seq = ids + new
                    with lock, torch.no_grad(), gdn_inversion(spec):
                        lp = torch.log_softmax(model(input_ids=torch.tensor([seq]), use_cache=False).logits[0]
                                               .float(), -1)
                    if step == 0 and req.get("echo"):
                        lps += [float(lp[i - 1, seq[i]]) for i in range(1, len(seq))]
                        tops += [{tok.decode([int(j)]): float(v) for v, j in zip(*lp[i - 1].topk(n_top))}
                                 for i in range(1, len(seq))]
                    if step == n_new:
                        break
                    nxt = int(lp[-1].argmax())
                    new.append(nxt)
                    lps.append(float(lp[-1, nxt]))
                    tops.append({tok.decode([int(j)]): float(v) for v, j in zip(*lp[-1].topk(n_top))})
                if not req.get("echo"):
                    lps, tops = lps[1:], tops[1:]
                text = (tok.decode(ids) if req.get("echo") else "") + tok.decode(new)
                choices.append({"index": idx, "text": text, "finish_reason": "length",
                                "logprobs": {"token_logprobs": lps, "top_logprobs": tops} if n_top else None})
            return {"id": "0", "object": "text_completion", "choices": choices}

        def do_POST(self):
            if self.path == "/v1/completions":
                return self._send(200, self._completions(json.loads(self.rfile.read(
                    int(self.headers.get("Content-Length", 0))))))
            if self.path != "/generate":
                return self._send(404, {"error": "not found"})
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            ids = req.get("input_ids") or tok(req.get("text", ""), add_special_tokens=False)["input_ids"]
            if not ids:
                return self._send(400, {"error": "empty prompt"})
            start = int(req.get("logprob_start_len", -1))
            top_n = int(req.get("top_logprobs_num", 0))
            with lock, torch.no_grad(), gdn_inversion(spec):
                logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()
            lp = torch.log_softmax(logits, -1)
            nxt = int(lp[-1].argmax())
            meta = {"id": "0", "prompt_tokens": len(ids), "completion_tokens": 1,
                    "finish_reason": {"type": "length", "length": 1}}
            if req.get("return_logprob"):
                s = max(start, 0)
                meta["input_token_logprobs"] = [[None if i == 0 else float(lp[i - 1, ids[i]]), ids[i], None]
                                                for i in range(s, len(ids))]
                meta["output_token_logprobs"] = [[float(lp[-1, nxt]), nxt, None]]
                if top_n > 0:
                    def top(row):
                        v, ix = row.topk(top_n)
                        return [[float(a), int(b), None] for a, b in zip(v, ix)]
                    meta["input_top_logprobs"] = [None if i == 0 else top(lp[i - 1]) for i in range(s, len(ids))]
            self._send(200, {"text": tok.decode([nxt]), "output_ids": [nxt], "meta_info": meta})

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}"

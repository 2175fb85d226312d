"""Server mode of ``sglang-trinv eval``: perplexity and top-1 agreement through SGLang's ``/generate``.

Why: the in-process eval swaps one function inside transformers; a served model goes through SGLang's whole
prefill (scheduler, chunked prefill, CUDA graphs, the plugin's patch in the worker processes). One server per
method: started here one after the other (``--launch``: ``sglang.launch_server --linear-attn-inv METHOD``, stopped
after its turn) or already running (``--server-url stock=http://…:30000 --server-url blockdoubling=…``); the same
token windows sent as ``input_ids`` with
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
import re
import shlex
import signal
import sys
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


def server_targets(args) -> list[tuple[str, str | None, str | None, str | None]]:
    """``(label, url, method, precision)`` per server, the baseline first: the running servers of
    ``--server-url`` (method/precision None), or with ``--launch`` one server to start per ``--methods`` entry
    (``NAME`` or ``NAME@PRECISION``; stock added first; the eval's reference-only default list is replaced by
    ``stock,blockdoubling``)."""
    from .evals import DEFAULT_METHODS, parse_methods

    if args.server_url:
        if args.launch:
            raise ValueError("--launch starts the servers itself: drop --server-url (or --launch)")
        return [(label, url, None, None) for label, url in parse_server_urls(args.server_url)]
    methods = "stock,blockdoubling" if args.methods == DEFAULT_METHODS else args.methods
    return [(sp.label, None, sp.method, sp.precision) for sp in parse_methods(methods, "sglang")]


def run_server_mode(args, th) -> int:
    """Server mode, one server after the other (launched ones are stopped before the next starts, so one GPU
    suffices): perplexity windows, multiple choice, passkey and lm-eval through each; agreement and KL against
    the first server's answers, kept in memory."""
    from .benchmarks.prefill import BenchError, ManagedServer, _raise_interrupt, check_log, is_ready
    from .evals import (MethodResult, _rel, breaches, make_passkey_prompts, mc_predictions, passkey_scores,
                        score_mc, summarize_passkey, task_config, write_reports)
    from .evals_data import load_corpus, python_version, token_stream, token_windows

    try:
        targets = server_targets(args)
        docs, corpus_label = load_corpus(args.corpus)
        from transformers import AutoTokenizer

        if not (Path(args.model) / "tokenizer_config.json").is_file():
            raise FileNotFoundError(f"tokenizer of the served model not found in {args.model} (pass --model)")
        tok = AutoTokenizer.from_pretrained(args.model)
        mc_items, mc_path, passkey = task_config(args)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"sglang-trinv eval: {e}") from None
    windows = token_windows(token_stream(tok, docs), args.ctx, args.max_tokens)
    pk_prompts = None if not passkey else make_passkey_prompts(
        tok, token_stream(tok, docs), passkey["lengths"], passkey["depths"], passkey["trials"], passkey.get("seed", 0))
    out = Path(args.out) if args.out else Path("evals/results") / f"{Path(args.model).name}-server"
    k = args.server_topk
    from tqdm.auto import tqdm

    results: list[MethodResult] = []
    base: list[tuple[list[float], list[dict]]] = []  # the first server's log-probs and top-k, per window
    base_preds = None
    servers: list[dict] = []
    problems: list[str] = []
    t_start = time.time()
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        for i, (label, url, method, precision) in enumerate(targets):
            rec: dict = {"label": label}
            servers.append(rec)
            managed = None
            try:
                if url is None:  # --launch: start it, wait until healthy; always stopped below
                    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
                    managed = ManagedServer(model_path=args.model, method=method, precision=precision,
                                            server_args=shlex.split(args.server_args),
                                            log_path=out / f"server-{safe}.log", host=args.host,
                                            python=args.server_python, launch_module=args.launch_module)
                    managed.start()
                    print(f"[{label}] starting: {shlex.join(managed.command())} (log: {managed.log_path})",
                          file=sys.stderr, flush=True)
                    rec.update(command=shlex.join(managed.command()), log=_rel(managed.log_path))
                    rec["ready_s"] = managed.wait_ready(args.startup_timeout)
                    url = managed.url
                    print(f"[{label}] ready after {rec['ready_s']:.0f}s at {url}", file=sys.stderr, flush=True)
                elif not is_ready(url):
                    raise BenchError(f"{url} is not ready (no 200 from /health; is the server running?)")
                rec["url"] = url
                r = MethodResult(label, f"server {url}" if managed is None else
                                 f"launched server ({method}{'@' + precision if precision else ''})")
                results.append(r)
                agree, kl_sum = 0, 0.0
                for w, win in enumerate(tqdm(windows, desc=f"{label}: perplexity", unit="win", disable=args.quiet)):
                    t0 = time.perf_counter()
                    lps, tops = prompt_logprobs_topk(url, win, k)
                    r.seconds += time.perf_counter() - t0
                    r.nll -= sum(lps)
                    r.tokens += len(lps)
                    r.nonfinite_logits += sum(not math.isfinite(x) for x in lps)
                    if i == 0:
                        base.append((lps, tops))
                        continue
                    b_lps, b_tops = base[w]
                    agree += sum(bool(t and b) and max(t, key=t.get) == max(b, key=b.get)
                                 for t, b in zip(tops, b_tops))
                    r.max_abs_logprob_diff = max([r.max_abs_logprob_diff] + [abs(a - b) for a, b in zip(lps, b_lps)])
                    kls = [coarse_kl(b, t) for b, t in zip(b_tops, tops) if b and t]
                    kl_sum += sum(kls)
                    r.kl_max = max([r.kl_max] + kls)
                r.top1_agree = agree / r.tokens if i else 1.0
                r.kl_mean = kl_sum / r.tokens  # lower bounds (top-k coarsening, see the module docstring)
                # tasks: the same code as in-process, scored by this server
                if mc_items:
                    preds, preds_sum, t = mc_predictions(server_scorer(url), tok, mc_items)
                    r.seconds += t
                    base_preds = score_mc(results, i, preds, preds_sum, mc_items, base_preds)
                if pk_prompts:
                    scores, t = passkey_scores(server_scorer(url), pk_prompts)
                    r.seconds += t
                    r.passkey = summarize_passkey(scores)
                if args.lm_eval:  # EleutherAI's harness against the server's /v1/completions
                    from .evals import DEFAULT_MC
                    from .evals_lmeval import require_lm_eval, run_tasks

                    require_lm_eval()
                    t0 = time.perf_counter()
                    r.lm_eval = run_tasks(url, str(args.model), [t.strip() for t in args.lm_eval.split(",")
                                                                  if t.strip()],
                                          Path(args.mc or DEFAULT_MC), args.lm_eval_limit, args.lm_eval_include)
                    r.seconds += time.perf_counter() - t0
            except (BenchError, ServerError) as e:
                raise SystemExit(f"sglang-trinv eval: server {label}: {e}") from None
            finally:
                if managed is not None:
                    rec["exit_code"] = managed.stop()
                    rec["log_check"] = check_log(managed.log_path.read_text(errors="replace"), method)
                    problems += [f"{label}: {p}" for p in rec["log_check"]["problems"]]
    except KeyboardInterrupt:
        raise SystemExit("sglang-trinv eval: interrupted; launched servers stopped") from None
    finally:
        signal.signal(signal.SIGTERM, old)
    for r in results:
        r.ppl = math.exp(r.nll / r.tokens) if math.isfinite(r.nll) else float("inf")
        r.ppl_delta = r.ppl - results[0].ppl
        r.ppl_rel_delta = r.ppl_delta / results[0].ppl
    meta = {"model": _rel(args.model), "model_name": Path(args.model).name, "params": 0, "model_dtype": "server",
            "backend": "server", "device": ", ".join(f"{s['label']}={s.get('url')}" for s in servers),
            "corpus": corpus_label, "ctx": args.ctx, "windows": len(windows), "python": python_version(),
            "torch": torch.__version__, "transformers": __import__("transformers").__version__,
            "threads": args.threads, "seconds": time.time() - t_start,
            "mc": None if not mc_items else {"source": _rel(mc_path), "items": len(mc_items),
                                             "choices": len(mc_items[0]["choices"])}, "passkey": passkey,
            "stress_len": 0, "thresholds": asdict(th), "fail_skip": [], "server_topk": k,
            "servers": servers, "launch": bool(args.launch), "server_args": args.server_args if args.launch else None}
    # a KL lower bound above max_kl is a real breach, so every threshold applies as in-process
    violations = breaches(results, th) if args.fail_if_worse else None
    paths = write_reports(out, meta, results, violations)
    print(paths["md"].read_text())
    if problems:  # a launched server whose log does not show the method it was started with
        print(("FAIL (server logs): " if args.fail_on_log else "server-log check (not enforced): ")
              + "; ".join(problems))
        if args.fail_on_log:
            return 1
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


def main(argv=None) -> int:
    """``python -m sglang_trinv.evals_server --model-path M --port P --linear-attn-inv METHOD``: the stand-in as a
    process with sglang.launch_server's flags (unknown ones ignored), so ``eval --launch`` can be tested without
    SGLang. Serves until SIGTERM/SIGINT."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--linear-attn-inv", default="stock")
    ap.add_argument("--linear-attn-inv-precision", default=None)
    a, _ = ap.parse_known_args(argv)
    method = a.linear_attn_inv + (f"@{a.linear_attn_inv_precision}" if a.linear_attn_inv_precision else "")
    server, url = serve(a.model_path, method, a.host, a.port)
    print(f"stand-in serving {method} at {url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``sglang-trinv bench prefill`` on CPU, against a stand-in for ``sglang.launch_server`` that this file provides.

The stand-in (``python -m tests.test_bench_prefill --model-path M --port P --linear-attn-inv METHOD …``, run
by the benchmark through its hidden ``--launch-module``) does real work with the real plugin code: it calls
``sglang_trinv.plugin.select(METHOD)`` as SGLang's launcher hook does (the plugin's own start-up line), imports
SGLang's GDN ``chunk.py`` (patched by the plugin when a method is selected) and serves every ``/generate``
batch through ``chunk_gated_delta_rule_fwd_intra`` looked up there: SGLang's stock Triton kernel or ours, under
the Triton interpreter, on varlen-packed prompts (``cu_seqlens``), as SGLang's scheduler batches them. The
logits come from the kernel's ``u``; timings are measured. It answers ``/model_info``, ``/health``,
``/server_info`` and ``/generate`` (batched ``input_ids``, ``return_logprob``, ``e2e_latency``) in SGLang's
schema. ``--crash-at-start`` makes it exit before serving; ``--light`` serves without torch (clean-up tests).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = ROOT / "evals" / "models" / "qwen3-next-tiny-stdlib"


# ============================================================================================ stand-in server
class MiniGDN:
    """Embeddings -> one GDN intra-chunk step (SGLang's kernel, or ours through the plugin) -> logits."""

    def __init__(self, vocab: int, seed: int = 0, H: int = 2, Hg: int = 1, K: int = 16, V: int = 16, D: int = 32):
        import torch

        g = torch.Generator().manual_seed(seed)
        self.vocab, self.H, self.Hg, self.K, self.V = vocab, H, Hg, K, V
        self.E = torch.randn(vocab, D, generator=g)
        self.Wk = torch.randn(D, Hg * K, generator=g) / D ** 0.5
        self.Wv = torch.randn(D, H * V, generator=g) / D ** 0.5
        self.Wb = torch.randn(D, H, generator=g) / D ** 0.5
        self.Wg = torch.randn(D, H, generator=g) / D ** 0.5
        self.Wout = torch.randn(V, vocab, generator=g)
        import importlib

        self.chunk = importlib.import_module("sglang.kernels.ops.attention.fla.chunk")  # patched on import
        self.cumsum = importlib.import_module("sglang.kernels.ops.attention.fla.cumsum").chunk_local_cumsum
        self.index = importlib.import_module("sglang.kernels.ops.attention.fla.index").prepare_chunk_indices

    def logprobs(self, seqs: list[list[int]]):
        """Per prompt: log-probabilities ``[T, vocab]`` (row t predicts token t+1)."""
        import torch
        import torch.nn.functional as F

        ids = torch.tensor([t for s in seqs for t in s])
        T = len(ids)
        cu = torch.tensor([0] + [len(s) for s in seqs]).cumsum(0)
        x = self.E[ids]
        k = F.normalize((x @ self.Wk).view(1, T, self.Hg, self.K), dim=-1)
        v = (x @ self.Wv).view(1, T, self.H, self.V)
        beta = torch.sigmoid(x @ self.Wb)[None]
        g = self.cumsum(-F.softplus(x @ self.Wg - 3.0)[None].contiguous(), chunk_size=64, cu_seqlens=cu)
        fn = self.chunk.chunk_gated_delta_rule_fwd_intra  # what SGLang's chunk_gated_delta_rule_fwd calls
        w, u, A = fn(k, v, g=g, beta=beta, cu_seqlens=cu, chunk_indices=self.index(cu, 64))
        lp = torch.log_softmax(u[0].mean(1) @ self.Wout, dim=-1)
        return [lp[int(cu[i]):int(cu[i + 1])] for i in range(len(seqs))]


def _serve_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--linear-attn-inv", default="stock")
    ap.add_argument("--linear-attn-inv-precision", default=None)
    ap.add_argument("--crash-at-start", action="store_true")
    ap.add_argument("--light", action="store_true")
    args, unknown = ap.parse_known_args(argv)  # SGLang flags the stand-in ignores
    print(f"stand-in sglang.launch_server: {args} ignoring {unknown}", flush=True)
    if args.crash_at_start:
        print("Traceback (most recent call last):\nRuntimeError: stand-in server told to crash at start", flush=True)
        return 3
    model = None
    if not args.light:
        import logging

        logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="[%(asctime)s] %(message)s", force=True)
        import torch

        if not torch.cuda.is_available():
            from sglang_trinv.testing import enable_interpreter

            enable_interpreter()
        from sglang_trinv import plugin

        plugin.select(args.linear_attn_inv, args.linear_attn_inv_precision)  # as the launcher's CLI hook does
        cfg = Path(args.model_path) / "config.json"
        vocab = json.loads(cfg.read_text()).get("vocab_size", 2048) if cfg.is_file() else 2048
        model = MiniGDN(vocab)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, code, obj):
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/model_info":
                return self._send(200, {"model_path": args.model_path, "is_generation": True})
            if self.path == "/health":
                return self._send(200, {})
            if self.path in ("/server_info", "/get_server_info"):
                import importlib.metadata

                return self._send(200, {"version": importlib.metadata.version("sglang") + " (stand-in)",
                                        "tp_size": 1, "linear_attn_inv": args.linear_attn_inv})
            return self._send(404, {"detail": "Not Found"})

        def do_POST(self):
            t0 = time.perf_counter()
            if self.path != "/generate":
                return self._send(404, {"detail": "Not Found"})
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            ids = req.get("input_ids")
            if not ids:
                return self._send(400, {"error": "input_ids required (the stand-in has no tokenizer)"})
            single = isinstance(ids[0], int)
            seqs = [list(ids)] if single else [list(s) for s in ids]
            if model is None:
                return self._send(503, {"error": "--light stand-in does not compute"})
            sp = req.get("sampling_params") or {}
            n_new = max(1, int(sp.get("max_new_tokens", 1)))
            start, top_n = int(req.get("logprob_start_len", -1)), int(req.get("top_logprobs_num", 0))
            with lock:
                lps = model.logprobs(seqs)
                outs = [[int(lp[-1].argmax())] for lp in lps]
                for _ in range(n_new - 1):  # greedy decode by recomputing the prompt + generated tokens
                    nxt = model.logprobs([s + o for s, o in zip(seqs, outs)])
                    for o, lp in zip(outs, nxt):
                        o.append(int(lp[-1].argmax()))
            res = []
            for s, lp, o in zip(seqs, lps, outs):
                meta = {"id": "0", "prompt_tokens": len(s), "completion_tokens": len(o),
                        "finish_reason": {"type": "length", "length": len(o)}}
                if req.get("return_logprob"):
                    b = max(start, 0)
                    meta["input_token_logprobs"] = [[None if i == 0 else float(lp[i - 1, s[i]]), s[i], None]
                                                    for i in range(b, len(s))]
                    if top_n > 0:
                        def top(row):
                            vals, ix = row.topk(top_n)
                            return [[float(a), int(c), None] for a, c in zip(vals, ix)]
                        meta["input_top_logprobs"] = [None if i == 0 else top(lp[i - 1]) for i in range(b, len(s))]
                    meta["output_token_logprobs"] = [[float(lp[-1, o[0]]), o[0], None]]
                meta["e2e_latency"] = time.perf_counter() - t0
                res.append({"text": "", "output_ids": o, "meta_info": meta})
            self._send(200, res[0] if single else res)

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print("The server is fired up and ready to roll! (stand-in)", flush=True)
    signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=server.shutdown, daemon=True).start())
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(_serve_main(sys.argv[1:]))


# ============================================================================================ tests
import pytest  # noqa: E402

from sglang_trinv.benchmarks import prefill  # noqa: E402
from sglang_trinv.cli import main  # noqa: E402

STAND_IN = "tests.test_bench_prefill"


@pytest.fixture
def repo_env(monkeypatch):
    """The stand-in module must be importable by the server subprocess (python -m tests.test_bench_prefill)."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    for k in ("SGLANG_LINEAR_ATTN_INV", "SGLANG_LINEAR_ATTN_INV_PRECISION"):
        monkeypatch.delenv(k, raising=False)


def _group_alive(pid: int) -> bool:
    return prefill.group_alive(pid)


def _bench(tmp_path, *extra):
    return main(["bench", "prefill", "--launch-module", STAND_IN, "--out", str(tmp_path), "--quiet",
                 "--repeats", "1", "--startup-timeout", "120", *extra])


def test_launch_mode_measures_each_method_and_proves_the_kernel_from_the_log(tmp_path, repo_env):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"vocab_size": 300}))
    rc = _bench(tmp_path, "--model-path", str(tmp_path / "model"), "--methods", "blockdoubling",
                "--lengths", "64,100", "--batches", "1,2", "--max-batch-tokens", "150",
                "--server-args=--mem-fraction-static 0.3 --disable-cuda-graph")
    assert rc == 0, (tmp_path / "prefill.md").read_text()
    data = json.loads((tmp_path / "prefill.json").read_text())
    meta, servers, rows = data["meta"], data["servers"], data["rows"]
    assert [s["label"] for s in servers] == ["stock", "blockdoubling"]  # stock added first: the baseline
    assert meta["baseline"] == "stock" and meta["vocab"] == 300 and meta["gpu"] and meta["versions"]["torch"]
    measured = [r for r in rows if "tok_s" in r]
    assert {(r["method"], r["length"], r["batch"]) for r in measured} == {
        (m, L, b) for m in ("stock", "blockdoubling") for L, b in ((64, 1), (64, 2), (100, 1))}
    assert {(r["length"], r["batch"]) for r in rows if "skipped" in r} == {(100, 2)}  # 200 > 150 tokens
    for r in measured:
        assert r["tok_s"] > 0 and r["ttft_source"] == "server e2e_latency" and 0 < r["ttft_mean_s"] <= r["ttft_max_s"]
        assert r["ratio_vs_stock"] > 0
    assert all(r["ratio_vs_stock"] == 1.0 for r in measured if r["method"] == "stock")
    stock, ours = servers
    assert "--linear-attn-inv stock" in stock["command"] and "--disable-cuda-graph" in stock["command"]
    assert stock["log_check"]["startup_methods"] == ["stock"] and stock["log_check"]["served_lines"] == 0
    assert ours["log_check"]["served_methods"] == ["blockdoubling"] and not ours["log_check"]["problems"]
    assert "stand-in" in ours["info"]["version"] and ours["warm"]["first_request_s"] > 0
    for s in servers:  # the whole process group is gone
        assert s["exit_code"] is not None
        assert Path(s["log"]).is_file()
    md = (tmp_path / "prefill.md").read_text()
    assert "| 64 | 2 | blockdoubling |" in md and "vs stock" in md and "served by blockdoubling" in md
    assert (tmp_path / "prefill.png").read_bytes()[:4] == b"\x89PNG"


def test_server_url_mode_and_an_unreachable_server(tmp_path, repo_env):
    server = prefill.ManagedServer(model_path=str(tmp_path), method="stock", log_path=tmp_path / "s.log",
                                   launch_module=STAND_IN)
    with server:
        server.wait_ready(120)
        dead = f"http://127.0.0.1:{prefill.free_port()}"
        rc = main(["bench", "prefill", "--server-url", f"stock={server.url}", "--server-url", f"blockdoubling={dead}",
                   "--lengths", "64", "--batches", "1,3", "--repeats", "2", "--out", str(tmp_path / "r"), "--quiet"])
        pid = server.proc.pid
        assert server.proc.poll() is None  # --server-url: the benchmark neither starts nor stops servers
    assert not _group_alive(pid)
    assert rc == 1
    data = json.loads((tmp_path / "r" / "prefill.json").read_text())
    assert data["meta"]["mode"] == "server-url" and data["meta"]["vocab"] == 2048
    rows = [r for r in data["rows"] if "tok_s" in r]
    assert [(r["method"], r["batch"], len(r["wall_s"])) for r in rows] == [("stock", 1, 2), ("stock", 3, 2)]
    bad = data["servers"][1]
    assert "is not ready" in bad["error"] and bad.get("log_check") is None
    md = (tmp_path / "r" / "prefill.md").read_text()
    assert "FAILED" in md and "not checked (--server-url)" in md


def test_server_exiting_early_reports_its_log_tail(tmp_path, repo_env, capsys):
    rc = _bench(tmp_path, "--model-path", str(tmp_path), "--methods", "stock", "--server-args=--crash-at-start")
    assert rc == 1
    err = capsys.readouterr().err
    assert "exited early with code 3" in err and "told to crash at start" in err  # the log tail is shown
    data = json.loads((tmp_path / "prefill.json").read_text())
    assert "told to crash" in data["servers"][0]["error"] and data["rows"] == []
    assert "FAILED: server for stock exited early" in (tmp_path / "prefill.md").read_text()


def test_unknown_method_or_precision_is_refused_before_any_server_starts(tmp_path, repo_env):
    with pytest.raises(SystemExit, match="unknown method 'nope'.*blockdoubling"):
        _bench(tmp_path, "--model-path", str(tmp_path), "--methods", "stock,nope")
    with pytest.raises(SystemExit, match="unknown precision"):
        _bench(tmp_path, "--model-path", str(tmp_path), "--methods", "blockdoubling:fp8")
    with pytest.raises(SystemExit, match="--model-path"):
        _bench(tmp_path)
    with pytest.raises(SystemExit, match="--lengths"):
        _bench(tmp_path, "--model-path", str(tmp_path), "--lengths", "1k")
    assert not list(tmp_path.glob("server-*.log"))


def test_sigterm_during_a_run_stops_the_server_and_keeps_a_partial_report(tmp_path, repo_env, monkeypatch):
    pids = []

    def interrupted(url, label, *a, **k):
        pids.append(url)
        os.kill(os.getpid(), signal.SIGTERM)  # e.g. `timeout` or the job system stopping the benchmark
        time.sleep(5)
        raise AssertionError("SIGTERM did not interrupt")

    monkeypatch.setattr(prefill, "bench_server", interrupted)
    started = []
    orig_start = prefill.ManagedServer.start

    def start(self):
        started.append(orig_start(self))
        return started[-1]

    monkeypatch.setattr(prefill.ManagedServer, "start", start)
    rc = _bench(tmp_path, "--model-path", str(tmp_path), "--methods", "stock,blockdoubling", "--server-args=--light")
    assert rc == 130 and len(started) == 1  # the second method never started
    assert not _group_alive(started[0].proc.pid)
    data = json.loads((tmp_path / "prefill.json").read_text())
    assert "interrupted" in data["meta"]["failed"] and data["servers"][0]["exit_code"] is not None
    assert signal.getsignal(signal.SIGTERM) is not prefill._raise_interrupt  # handler restored


def test_stop_kills_children_left_in_the_process_group(tmp_path):
    script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); time.sleep(300)"
    s = prefill.ManagedServer(model_path="m", method="stock", log_path=tmp_path / "x.log", python=sys.executable)
    s.command = lambda: [sys.executable, "-c", script]
    s.start()
    time.sleep(0.5)
    t0 = time.time()
    s.stop(grace=5)
    assert time.time() - t0 < 20 and not _group_alive(s.proc.pid)


def test_log_patterns_match_the_plugin_and_check_log_verdicts():
    src = {p.name: p.read_text() for p in (ROOT / "sglang_trinv" / "plugin").glob("*.py")}
    assert "sglang-trinv: --linear-attn-inv=%s" in src["__init__.py"]
    assert "sglang-trinv: --linear-attn-inv=stock on SGLang" in src["__init__.py"]
    assert "sglang-trinv: first GDN chunk prefill served by %s" in src["gdn.py"]
    assert prefill.FALLBACK_TEXT in src["gdn.py"]
    ok = ("[x] sglang-trinv: --linear-attn-inv=blockdoubling precision=bf16x3 on SGLang 0.5.17: …\n"
          "[x] Linear attention kernel backend: decode=triton, prefill=triton, verify=triton\n"
          "[x] sglang-trinv: first GDN chunk prefill served by blockdoubling (precision bf16x3), k(1, 9) …\n")
    c = prefill.check_log(ok, "blockdoubling")
    assert not c["problems"] and not c["warnings"] and c["backend"].startswith("decode=triton")
    assert "did not run" in prefill.check_log(ok.splitlines()[0], "blockdoubling")["problems"][0]
    assert "stock server ran our kernel" in prefill.check_log(ok, "stock")["problems"][0]
    assert prefill.check_log("", "stock")["warnings"] and not prefill.check_log("", "stock")["problems"]
    fb = ok + "sglang-trinv: GDN prefill falls back to SGLang's stock kernel for k(…)\n"
    assert "fallback" in prefill.check_log(fb, "blockdoubling")["problems"][0]
    fi = ok.replace("prefill=triton", "prefill=flashinfer")
    assert "not Triton" in prefill.check_log(fi, "blockdoubling")["problems"][0]
    two = ok + ok.splitlines()[2] + "\n"  # TP=2: one line per scheduler
    assert prefill.check_log(two, "blockdoubling")["served_lines"] == 2


def test_bench_dispatcher_lists_prefill():
    from sglang_trinv.bench import BENCHMARKS

    assert BENCHMARKS["prefill"][0] == "sglang_trinv.benchmarks.prefill"
    out = subprocess.run([sys.executable, "-m", "sglang_trinv.cli", "bench", "prefill", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--server-url" in out.stdout and "--max-batch-tokens" in out.stdout


def test_every_measured_point_is_warmed_up_before_any_timed_call(monkeypatch):
    """A batch is one varlen launch, so each (length, batch) is a new kernel shape: Triton compiles (and SGLang's
    autotuners re-tune) on first use. Each measured point gets its own warm-up call before the first timed one;
    points over --max-batch-tokens get neither."""
    import random
    from types import SimpleNamespace

    calls = []

    def fake_generate(url, ids, timeout):
        calls.append((len(ids[0]), len(ids)))
        return 0.01, [{"e2e_latency": 0.01}] * len(ids)

    monkeypatch.setattr(prefill, "generate_batch", fake_generate)
    args = SimpleNamespace(request_timeout=5.0, warmup=1, max_batch_tokens=3000, repeats=2, quiet=True)
    rows, warm = prefill.bench_server("http://x", "m", [256, 1024], [1, 4], args, random.Random(0), 100)
    measured = [(r["length"], r["batch"]) for r in rows if "tok_s" in r]
    assert measured == [(256, 1), (256, 4), (1024, 1)]
    assert [r for r in rows if "skipped" in r][0]["batch"] == 4  # 1024 × 4 > 3000 tokens
    first_timed = len(calls) - len(measured) * args.repeats
    assert calls[0] == (128, 1) and sorted(calls[1:first_timed]) == sorted(measured)
    assert calls[first_timed:] == [p for p in measured for _ in range(args.repeats)]
    assert warm["first_request_s"] == 0.01


def test_server_url_mode_interleaves_the_servers_timed_calls(tmp_path, monkeypatch):
    """Servers given by URL are all up at once: each is warmed up, then every repeat of a point calls each server
    once, the order rotating; a server failing in the middle leaves the rotation with its error reported."""
    calls = []

    def fake_generate(url, ids, timeout):
        calls.append((url, len(ids[0]), len(ids)))
        if url == "http://c" and sum(1 for c in calls if c[0] == url) > 4:  # c dies after its warm-up + 1 call
            raise prefill.BenchError("c: connection refused")
        wall = {"http://a": 0.02, "http://b": 0.01, "http://c": 0.04}[url]
        return wall, [{"e2e_latency": wall}] * len(ids)

    monkeypatch.setattr(prefill, "generate_batch", fake_generate)
    monkeypatch.setattr(prefill, "is_ready", lambda url: True)
    monkeypatch.setattr(prefill, "server_info", lambda url: {"version": "test"})
    rc = main(["bench", "prefill", "--server-url", "stock=http://a", "--server-url", "blockdoubling=http://b",
               "--server-url", "hybrid=http://c", "--lengths", "64", "--batches", "1,2", "--repeats", "3",
               "--vocab-size", "100", "--out", str(tmp_path), "--quiet"])
    assert rc == 1  # one server failed
    n_warm = 3 * (1 + 2)  # per server: one short request + one per point
    assert [c[0] for c in calls[:n_warm]] == ["http://a"] * 3 + ["http://b"] * 3 + ["http://c"] * 3
    timed = [c for c in calls[n_warm:]]
    # the order rotates over the three given servers: repeat r starts at the (r mod 3)-th. Point (64, 1): a b c,
    # b c (fails) a, (c is out) a b; point (64, 2): a b, b a, a b
    assert "".join(u[-1] for u, _, _ in timed) == "abc" + "bca" + "ab" + "ab" + "ba" + "ab"
    data = json.loads((tmp_path / "prefill.json").read_text())
    assert data["meta"]["interleaved"] is True
    got = {(r["method"], r["batch"]): r for r in data["rows"] if "tok_s" in r}
    assert set(got) == {("stock", 1), ("stock", 2), ("blockdoubling", 1), ("blockdoubling", 2)}
    assert got[("blockdoubling", 2)]["wall_s"] == [0.01] * 3 and got[("stock", 1)]["tok_s"] == 64 / 0.02
    bad = [s for s in data["servers"] if s.get("error")]
    assert [s["label"] for s in bad] == ["hybrid"] and "connection refused" in bad[0]["error"]
    md = (tmp_path / "prefill.md").read_text()
    assert "interleaved" in md and "FAILED" in md

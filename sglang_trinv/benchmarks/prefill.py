"""A/B prefill throughput of a real SGLang server, one server per ``--linear-attn-inv`` method.

    sglang-trinv bench prefill --model-path M --methods stock,blockdoubling [--server-args "…"] --out DIR
    sglang-trinv bench prefill --server-url stock=http://h:30000 --server-url blockdoubling=http://h:30001 …

For each method (``METHOD`` or ``METHOD:PRECISION``) it starts ``python -m sglang.launch_server --model-path M
--host 127.0.0.1 --port P --linear-attn-inv METHOD [--linear-attn-inv-precision P] [server args]`` in its own
process group (its log: ``DIR/server-<method>.log``), waits until ``/model_info`` and ``/health`` answer,
sends warm-up requests (Triton compiles each kernel on first use: the first requests of a fresh server take
seconds to minutes), then prefill-heavy batches through the native ``/generate`` endpoint: ``input_ids`` as a
batch of random token ids (no tokenizer needed; fresh ids for every request, so SGLang's prefix cache never
hits), ``max_new_tokens=1``. Per (input length, batch size) it records tokens/s = prompt tokens of the batch /
wall time of the HTTP call (median of ``--repeats``) and TTFT = SGLang's own per-request ``e2e_latency``
(with one output token, the time to the first token; the client's wall time where the server does not report
it). Then it stops the server (SIGTERM to the group, SIGKILL after 30 s; also on Ctrl-C, SIGTERM or failure)
and checks its log: the plugin's start-up line, "first GDN chunk prefill served by METHOD" for a method
(proof that our kernel ran in the scheduler process), no line of it for ``stock``, and no fallback to stock.

With ``--server-url LABEL=URL`` the servers are already running (launched by you with ``--linear-attn-inv``):
nothing is started or stopped and the logs are not checked. All of them are up at once, so each is warmed up
first and then the timed calls interleave: every repeat of a point calls each server once, the order rotating by
one per repeat (a drift during the run falls on every method alike, not on whichever was measured last). The
baseline of every ratio is ``stock`` (or the first label), measured in the same run.

Writes ``DIR/prefill.json``, ``DIR/prefill.md`` and ``DIR/prefill.png`` (throughput vs input length per method,
one panel per batch size, ratio to stock below) with the GPU name, date and versions.

Why a server and HTTP, not ``python -m sglang.bench_one_batch``: the question is what an operator gets from
``--linear-attn-inv``. Only a server goes through the path the plugin has to survive: the flag parsed by the
launcher, the choice handed to the spawned scheduler / TP worker processes, the patch applied when *they*
import SGLang's GDN kernels, chunked prefill, the mamba/radix cache, CUDA graphs and the scheduler's batching;
and only the server's log can prove that our kernel ran there. ``bench_one_batch`` runs one ModelRunner in the
calling process with a synthetic static batch (no scheduler, no chunked prefill, no tokenizer manager) and
does not parse plugin flags. The price: HTTP and scheduling overheads are in the numbers, which dilutes the
kernel speed-up (kernel-level numbers: ``sglang-trinv bench kernels``); sending ``input_ids`` keeps
tokenization out, and long prompts keep the overhead share small.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import random
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

STOCK = "stock"
DEFAULT_LENGTHS = "1024,4096,16384,32768"
DEFAULT_BATCHES = "1,4,16,32"

# The plugin's own log lines (sglang_trinv/plugin/__init__.py, gdn.py); tests check they still match its source.
STARTUP_RE = re.compile(r"sglang-trinv: --linear-attn-inv=(\S+)")
SERVED_RE = re.compile(r"sglang-trinv: first GDN chunk prefill served by (\S+)")
FALLBACK_TEXT = "falls back to SGLang's stock kernel"
BACKEND_RE = re.compile(r"Linear attention kernel backend: ([^\n]*)")


class BenchError(RuntimeError):
    """A server could not be started or measured (the message says why, with the log tail if any)."""


# ------------------------------------------------------------------------------------------------ helpers
def parse_ints(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"sglang-trinv bench prefill: {what} must be a comma list of integers, got {text!r}")
    if not values or any(v <= 0 for v in values):
        raise SystemExit(f"sglang-trinv bench prefill: {what} must be positive integers, got {text!r}")
    return values


def parse_method(spec: str) -> tuple[str, str | None]:
    """``"blockdoubling:bf16x3/tf32"`` -> ``("blockdoubling", "bf16x3/tf32")``, validated against the registry."""
    from ..registry import METHOD_NAMES, check_precision

    method, _, precision = spec.strip().partition(":")
    if method != STOCK and method not in METHOD_NAMES:
        raise SystemExit(f"sglang-trinv bench prefill: unknown method {method!r}; choose from: "
                         f"{', '.join((STOCK, *METHOD_NAMES))}")
    if precision:
        if method == STOCK:
            raise SystemExit("sglang-trinv bench prefill: stock takes no precision")
        try:
            check_precision(precision)
        except ValueError as e:
            raise SystemExit(f"sglang-trinv bench prefill: {e}") from None
    return method, precision or None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def http_json(url: str, payload=None, timeout: float = 30.0):
    """GET (payload None) or POST JSON; returns the decoded body. Raises BenchError with the reason."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
    except urllib.error.HTTPError as e:
        raise BenchError(f"{url}: HTTP {e.code}: {e.read()[:300]!r}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise BenchError(f"{url}: {reason} (is the server running?)") from None
    try:
        return json.loads(body) if body else None
    except ValueError:
        raise BenchError(f"{url}: not JSON: {body[:200]!r}") from None


def _status(url: str, timeout: float = 5.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


def is_ready(url: str) -> bool:
    """SGLang answers /model_info once its HTTP server is up and /health with 200 once it is ``Up``."""
    info = _status(f"{url}/model_info")
    if info not in (200, 404):  # 404: a server without /model_info (stand-ins) decides by /health alone
        return False
    return _status(f"{url}/health") == 200


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies awaiting their reaper do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp
            return True
    return False


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# ------------------------------------------------------------------------------------------------ servers
@dataclass
class ManagedServer:
    """One ``sglang.launch_server`` in its own process group; a context manager that always stops it."""

    model_path: str
    method: str
    precision: str | None = None
    server_args: list[str] = field(default_factory=list)
    log_path: Path = Path("server.log")
    host: str = "127.0.0.1"
    port: int = 0
    python: str = sys.executable
    launch_module: str = "sglang.launch_server"
    env: dict | None = None
    cwd: str | None = None  # not a checkout of this project: the plugin must come from the installed package
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [self.python, "-m", self.launch_module, "--model-path", str(self.model_path),
               "--host", self.host, "--port", str(self.port), "--linear-attn-inv", self.method]
        if self.precision:
            cmd += ["--linear-attn-inv-precision", self.precision]
        return cmd + list(self.server_args)

    def start(self) -> "ManagedServer":
        self.port = self.port or free_port(self.host)
        env = dict(os.environ if self.env is None else self.env)
        # the flag decides; a stale selection in the environment must not leak into a stock server
        for k in ("SGLANG_LINEAR_ATTN_INV", "SGLANG_LINEAR_ATTN_INV_PRECISION"):
            env.pop(k, None)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.log_path = Path(self.log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w") as log:
            log.write("$ " + shlex.join(self.command()) + "\n")
            log.flush()
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=self.cwd, start_new_session=True)  # own process group: scheduler, TP workers
        return self

    def wait_ready(self, timeout: float = 900.0, poll: float = 1.0) -> float:
        """Seconds until ready. Raises BenchError (with the log tail) on early exit or timeout."""
        t0 = time.time()
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise BenchError(f"server for {self.method} exited early with code {self.proc.returncode}; "
                                 f"last lines of {self.log_path}:\n{tail(self.log_path)}")
            if is_ready(self.url):
                return time.time() - t0
            if time.time() - t0 > timeout:
                raise BenchError(f"server for {self.method} not ready after {timeout:.0f}s; last lines of "
                                 f"{self.log_path}:\n{tail(self.log_path)}")
            time.sleep(poll)

    def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM to the whole process group, SIGKILL after ``grace`` s. Returns the launcher's exit code."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        try:  # children (schedulers, detokenizer) may outlive the launcher: kill what is left of the group
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.time() + 15  # the GPU memory is free only once every process of the group is gone
        while group_alive(p.pid) and time.time() < deadline:
            time.sleep(0.2)
        return p.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


def check_log(text: str, method: str) -> dict:
    """What the server log proves about the plugin (see module docstring)."""
    startup = STARTUP_RE.findall(text)
    served = SERVED_RE.findall(text)
    backend = BACKEND_RE.findall(text)
    fallbacks = [ln for ln in text.splitlines() if FALLBACK_TEXT in ln]
    res = {
        "startup_lines": len(startup),
        "startup_methods": sorted(set(startup)),
        "served_lines": len(served),  # one per scheduler / TP worker that ran a GDN prefill
        "served_methods": sorted(set(served)),
        "fallback_lines": fallbacks[:5],
        "backend": backend[0].strip() if backend else None,
        "problems": [],
        "warnings": [],
    }
    if method == STOCK:
        if served:
            res["problems"].append(f"stock server ran our kernel ({', '.join(sorted(set(served)))})")
        if not startup:
            res["warnings"].append("no sglang-trinv start-up line (plugin not loaded, or logged before logging "
                                   "was configured)")
    else:
        if method not in served:
            res["problems"].append(f"no 'first GDN chunk prefill served by {method}' line: our kernel did not run "
                                   "in the scheduler")
        if set(served) - {method}:
            res["problems"].append(f"kernel of another method ran: {sorted(set(served) - {method})}")
        if fallbacks:
            res["problems"].append(f"{len(fallbacks)} fallback line(s) to SGLang's stock kernel")
        if method not in startup:
            res["warnings"].append(f"no start-up line for --linear-attn-inv={method}")
    if backend and "prefill=triton" not in backend[0]:
        res["problems"].append(f"GDN prefill backend is not Triton: {backend[0].strip()}")
    return res


def server_info(url: str) -> dict:
    """Version and the settings that matter for prefill, from SGLang's /server_info (or /get_server_info)."""
    for path in ("/server_info", "/get_server_info"):
        try:
            info = http_json(url + path, timeout=10)
        except BenchError:
            continue
        if isinstance(info, dict):
            keep = ("version", "tp_size", "chunked_prefill_size", "max_total_num_tokens", "attention_backend",
                    "linear_attn_backend", "linear_attn_prefill_backend", "linear_attn_inv",
                    "linear_attn_inv_precision", "mem_fraction_static", "disable_radix_cache", "context_length",
                    "cuda_graph_config", "dtype", "load_format", "max_running_requests")
            out = {k: info[k] for k in keep if k in info}
            for k in ("internal_states",):
                if isinstance(info.get(k), list) and info[k] and isinstance(info[k][0], dict):
                    st = info[k][0]
                    out.update({f"state_{kk}": st[kk] for kk in ("max_total_num_tokens", "chunked_prefill_size")
                                if kk in st})
            return out
    return {}


# ------------------------------------------------------------------------------------------------ requests
def generate_batch(url: str, batch: list[list[int]], timeout: float) -> tuple[float, list[dict]]:
    """One ``/generate`` call with a batch of ``input_ids``; returns (wall seconds, meta_info per prompt)."""
    payload = {"input_ids": batch if len(batch) > 1 else batch[0],
               "sampling_params": {"max_new_tokens": 1, "temperature": 0.0, "ignore_eos": True}}
    t0 = time.perf_counter()
    resp = http_json(f"{url}/generate", payload, timeout=timeout)
    wall = time.perf_counter() - t0
    outs = resp if isinstance(resp, list) else [resp]
    if len(outs) != len(batch):
        raise BenchError(f"{url}/generate: {len(batch)} prompts sent, {len(outs)} answers")
    metas = []
    for ids, o in zip(batch, outs):
        meta = (o or {}).get("meta_info", {})
        n = meta.get("prompt_tokens")
        if n is not None and int(n) != len(ids):
            raise BenchError(f"{url}: sent {len(ids)} prompt tokens, the server counted {n} (truncated? raise "
                             "--context-length)")
        metas.append(meta)
    return wall, metas


def random_batch(rng: random.Random, batch: int, length: int, vocab: int) -> list[list[int]]:
    lo = min(10, vocab - 1)  # skip the first ids (special tokens in most vocabularies)
    return [[rng.randrange(lo, vocab) for _ in range(length)] for _ in range(batch)]


def one_call(url: str, length: int, batch: int, rng: random.Random, vocab: int, timeout: float
             ) -> tuple[float, list[float], bool]:
    """One timed batch: (wall s, per-prompt TTFT s, whether the TTFTs are the server's own)."""
    wall, metas = generate_batch(url, random_batch(rng, batch, length, vocab), timeout)
    lat = [float(m["e2e_latency"]) for m in metas if isinstance(m.get("e2e_latency"), (int, float))]
    if len(lat) != batch:  # no per-request latency from this server: the call's wall time for each prompt
        return wall, [wall] * batch, False
    return wall, lat, True


def point_row(length: int, batch: int, walls: list[float], ttfts: list[float], from_server: bool) -> dict:
    wall = statistics.median(walls)
    return {"length": length, "batch": batch, "tokens": length * batch, "repeats": len(walls),
            "wall_s": walls, "tok_s": length * batch / wall,
            "ttft_mean_s": statistics.fmean(ttfts), "ttft_median_s": statistics.median(ttfts),
            "ttft_max_s": max(ttfts), "ttft_source": "server e2e_latency" if from_server else "client wall"}


def measure_point(url: str, length: int, batch: int, repeats: int, rng: random.Random, vocab: int,
                  timeout: float, progress=None) -> dict:
    walls, ttfts, from_server = [], [], True
    for _ in range(repeats):
        wall, lat, own = one_call(url, length, batch, rng, vocab, timeout)
        walls.append(wall)
        ttfts.extend(lat)
        from_server &= own
        if progress is not None:
            progress.update(1)
    return point_row(length, batch, walls, ttfts, from_server)


def plan(lengths: list[int], batches: list[int], args) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(every (length, batch) point, those within --max-batch-tokens)."""
    points = [(L, b) for L in lengths for b in batches]
    return points, [(L, b) for L, b in points if L * b <= args.max_batch_tokens]


def skipped_row(label: str, L: int, b: int, args) -> dict:
    return {"method": label, "length": L, "batch": b,
            "skipped": f"{L * b} tokens > --max-batch-tokens {args.max_batch_tokens}"}


def warm_up(url: str, todo: list[tuple[int, int]], args, rng: random.Random, vocab: int) -> dict:
    """One short request, then every measured (length, batch) point ``--warmup`` times, before any timing: a
    batch packs its prompts into one varlen launch, so a new batch size is a new shape — Triton specialises (and
    SGLang's autotuners re-tune) on it, and a warm-up at one batch size left those compiles inside the timed
    calls (up to 10 s at batch 8)."""
    t0 = time.time()
    first = generate_batch(url, random_batch(rng, 1, min([128, *(L for L, _ in todo)]), vocab),
                           args.request_timeout)[0]
    for L, b in todo:
        for _ in range(args.warmup):
            generate_batch(url, random_batch(rng, b, L, vocab), args.request_timeout)
    return {"first_request_s": first, "warmup_s": time.time() - t0}


def bench_server(url: str, label: str, lengths: list[int], batches: list[int], args, rng: random.Random,
                 vocab: int) -> tuple[list[dict], dict]:
    """Warm up, then every (length, batch) point; returns (rows, timings of the warm-up)."""
    from tqdm.auto import tqdm

    points, todo = plan(lengths, batches, args)
    warm = warm_up(url, todo, args, rng, vocab)
    rows = []
    with tqdm(total=len(todo) * args.repeats, desc=f"prefill {label}", unit="req", disable=args.quiet) as bar:
        for L, b in points:
            if L * b > args.max_batch_tokens:
                rows.append(skipped_row(label, L, b, args))
                continue
            row = measure_point(url, L, b, args.repeats, rng, vocab, args.request_timeout, bar)
            row["method"] = label
            rows.append(row)
    return rows, warm


def bench_interleaved(servers: list[tuple[str, str, random.Random]], lengths: list[int], batches: list[int],
                      args, vocab: int) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """Running servers (``--server-url``), ``(label, url, rng)`` each, already warmed up: every point's repeats
    alternate between the servers, the order rotating by one each repeat, so a drift during the run (clocks,
    the host's other processes, an idle server's polling) falls on every method alike rather than on whichever
    was measured last. Returns (rows per label, error per label that failed: it leaves the rotation)."""
    from tqdm.auto import tqdm

    points, todo = plan(lengths, batches, args)
    rows: dict[str, list[dict]] = {label: [] for label, _, _ in servers}
    errors: dict[str, str] = {}
    with tqdm(total=len(todo) * args.repeats * len(servers), desc="prefill (interleaved)", unit="req",
              disable=args.quiet) as bar:
        for L, b in points:
            if L * b > args.max_batch_tokens:
                for label in rows:
                    rows[label].append(skipped_row(label, L, b, args))
                continue
            walls = {label: [] for label in rows}
            ttfts = {label: [] for label in rows}
            own = dict.fromkeys(rows, True)
            for r in range(args.repeats):
                for j in range(len(servers)):
                    label, url, rng = servers[(j + r) % len(servers)]
                    if label in errors:
                        continue
                    try:
                        wall, lat, from_server = one_call(url, L, b, rng, vocab, args.request_timeout)
                    except BenchError as e:
                        errors[label] = str(e)
                        continue
                    walls[label].append(wall)
                    ttfts[label].extend(lat)
                    own[label] &= from_server
                    bar.update(1)
            for label in rows:
                if label not in errors and walls[label]:
                    rows[label].append({**point_row(L, b, walls[label], ttfts[label], own[label]), "method": label})
    return rows, errors


# ------------------------------------------------------------------------------------------------ reports
def add_ratios(rows: list[dict], baseline: str) -> None:
    base = {(r["length"], r["batch"]): r for r in rows if r["method"] == baseline and "tok_s" in r}
    for r in rows:
        b = base.get((r["length"], r["batch"]))
        if "tok_s" in r and b:
            r["ratio_vs_" + baseline] = r["tok_s"] / b["tok_s"]
            r["ttft_ratio_vs_" + baseline] = b["ttft_mean_s"] / r["ttft_mean_s"] if r["ttft_mean_s"] else None


def gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
        names = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
        if out.returncode == 0 and names:
            return f"{names[0]} ×{len(names)}" if len(names) > 1 else names[0]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name()
    except Exception:  # noqa: BLE001
        pass
    return "no GPU on this machine"


def versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("sglang", "sglang-trinv", "torch", "triton", "flashinfer-python", "sglang-kernel", "transformers"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def to_markdown(meta: dict, rows: list[dict], servers: list[dict]) -> str:
    base = meta["baseline"]
    v = meta["versions"]
    sv = {s["label"]: s.get("info", {}).get("version") for s in servers}
    out = [f"# Prefill A/B in a real SGLang server — {meta['gpu']} — {meta['date']}", "",
           f"Model `{meta['model']}`; server SGLang {', '.join(sorted({str(x) for x in sv.values()}))} "
           f"(client: sglang {v.get('sglang')}, sglang-trinv {v.get('sglang-trinv')}, torch {v.get('torch')}, "
           f"triton {v.get('triton')}, Python {v.get('python')}).",
           f"Server args: `{meta['server_args'] or '(none)'}`. `/generate` with batched `input_ids` (random, "
           f"fresh per request), `max_new_tokens=1`; {meta['warmup']} warm-up request(s) per (length, batch) "
           f"point; tokens/s = median over {meta['repeats']} repeats of prompt tokens / wall time of the call"
           + ("; the servers' timed calls interleaved (each repeat calls every server, the order rotating)"
              if meta.get("interleaved") else "")
           + "; TTFT = mean of SGLang's per-request `e2e_latency`. Ratios against "
           f"`{base}` measured in this run (>1: faster).", ""]
    out += ["## Servers", "", "| method | url | ready after | first request | log check |", "|---|---|---|---|---|"]
    for s in servers:
        chk = s.get("log_check")
        if s.get("error"):
            verdict = "FAILED: " + s["error"].splitlines()[0]
        elif chk is None:
            verdict = "not checked (--server-url)"
        else:
            verdict = "; ".join(chk["problems"]) or (f"ok: {chk['served_lines']}× served by "
                                                      f"{','.join(chk['served_methods']) or '-'}, "
                                                      f"backend {chk['backend'] or 'not logged'}")
            if chk["warnings"]:
                verdict += " (" + "; ".join(chk["warnings"]) + ")"
        ready = f"{s['ready_s']:.0f} s" if s.get("ready_s") is not None else "–"
        first = f"{s['warm']['first_request_s']:.1f} s" if s.get("warm") else "–"
        out.append(f"| {s['label']} | {s.get('url', '')} | {ready} | {first} | {verdict} |")
    out += ["", "## Throughput", "", f"| input len | batch | method | tok/s | vs {base} | TTFT mean (s) | "
            f"TTFT max (s) | TTFT vs {base} |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["length"], r["batch"], r["method"] != base, r["method"])):
        if "tok_s" not in r:
            out.append(f"| {r['length']} | {r['batch']} | {r['method']} | {r.get('skipped', 'failed')} |  |  |  |  |")
            continue
        ratio = r.get("ratio_vs_" + base)
        tr = r.get("ttft_ratio_vs_" + base)
        out.append(f"| {r['length']} | {r['batch']} | {r['method']} | {r['tok_s']:,.0f} | "
                   f"{'' if ratio is None else f'{ratio:.3f}×'} | {r['ttft_mean_s']:.3f} | {r['ttft_max_s']:.3f} | "
                   f"{'' if tr is None else f'{tr:.3f}×'} |")
    if meta.get("failed"):
        out += ["", "**Failed:** " + "; ".join(meta["failed"])]
    return "\n".join(out) + "\n"


def plot(path: Path, meta: dict, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = meta["baseline"]
    ok = [r for r in rows if "tok_s" in r]
    batches = sorted({r["batch"] for r in ok}) or [1]
    methods = list(dict.fromkeys(r["method"] for r in ok))
    fig, axes = plt.subplots(2, len(batches), figsize=(4.2 * len(batches), 6.4), squeeze=False,
                             gridspec_kw={"height_ratios": [2, 1]})
    for j, b in enumerate(batches):
        top, bot = axes[0][j], axes[1][j]
        for m in methods:
            sel = sorted((r for r in ok if r["method"] == m and r["batch"] == b), key=lambda r: r["length"])
            if not sel:
                continue
            xs = [r["length"] for r in sel]
            top.plot(xs, [r["tok_s"] for r in sel], marker="o", label=m)
            rs = [(r["length"], r.get("ratio_vs_" + base)) for r in sel if r.get("ratio_vs_" + base)]
            if rs and m != base:
                bot.plot([x for x, _ in rs], [y for _, y in rs], marker="o", label=m)
        for ax in (top, bot):
            ax.set_xscale("log", base=2)
            ax.grid(alpha=0.3)
        top.set_title(f"batch {b}")
        top.set_ylabel("prefill tokens/s")
        bot.axhline(1.0, color="grey", lw=0.8)
        bot.set_ylabel(f"× vs {base}")
        bot.set_xlabel("input length (tokens)")
        if j == 0 and top.get_legend_handles_labels()[0]:
            top.legend(fontsize=8)
    fig.suptitle(f"Prefill throughput, real SGLang server — {Path(meta['model']).name} — {meta['gpu']} — "
                 f"{meta['date'][:10]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(out: Path, meta: dict, rows: list[dict], servers: list[dict]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    add_ratios(rows, meta["baseline"])
    paths = {"json": out / "prefill.json", "md": out / "prefill.md", "png": out / "prefill.png"}
    paths["json"].write_text(json.dumps({"meta": meta, "servers": servers, "rows": rows}, indent=1, default=str))
    paths["md"].write_text(to_markdown(meta, rows, servers))
    try:
        plot(paths["png"], meta, rows)
    except Exception as e:  # noqa: BLE001 (a missing matplotlib must not lose the measurements)
        print(f"sglang-trinv bench prefill: no plot ({e})", file=sys.stderr)
        paths.pop("png")
    return paths


# ------------------------------------------------------------------------------------------------ main
def model_vocab(model_path: str | None, default: int) -> int:
    if model_path:
        cfg = Path(model_path) / "config.json"
        if cfg.is_file():
            try:
                data = json.loads(cfg.read_text())
                v = data.get("vocab_size") or data.get("text_config", {}).get("vocab_size")
                if v:
                    return int(v)
            except (ValueError, AttributeError):
                pass
    return default


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model-path", help="model folder or HF id served by every server (launch mode)")
    ap.add_argument("--methods", default="stock,blockdoubling",
                    help="comma list of METHOD or METHOD:PRECISION, each on its own server (default: %(default)s); "
                    "stock is added first when missing")
    ap.add_argument("--server-url", action="append", default=[], metavar="LABEL=URL",
                    help="measure already-running servers instead of launching (repeatable; label 'stock' is the "
                    "baseline)")
    ap.add_argument("--server-args", default="", help="extra sglang.launch_server arguments, one string "
                    "(e.g. \"--tp-size 2 --mem-fraction-static 0.6\")")
    ap.add_argument("--lengths", default=DEFAULT_LENGTHS, help="input lengths in tokens (default: %(default)s)")
    ap.add_argument("--batches", default=DEFAULT_BATCHES, help="prompts per /generate call (default: %(default)s)")
    ap.add_argument("--max-batch-tokens", type=int, default=262144,
                    help="skip (length, batch) points with more prompt tokens than this (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per point; the median counts")
    ap.add_argument("--warmup", type=int, default=1,
                    help="warm-up calls per (input length, batch) point (after one short one)")
    ap.add_argument("--vocab-size", type=int, default=None,
                    help="token ids are drawn below this (default: the model's config.json, else 2048)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/prefill-latest")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs the server")
    ap.add_argument("--launch-module", default="sglang.launch_server", help=argparse.SUPPRESS)  # tests: stand-in
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--startup-timeout", type=float, default=900.0, help="seconds to wait for each server")
    ap.add_argument("--request-timeout", type=float, default=1800.0, help="seconds per /generate call")
    ap.add_argument("--fail-on-log", action=argparse.BooleanOptionalAction, default=True,
                    help="exit 1 when a launched server's log does not prove the method ran (default: on)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="sglang-trinv bench prefill", description=__doc__.splitlines()[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


def _raise_interrupt(signum, frame):  # SIGTERM (timeout, job control) -> the same clean-up as Ctrl-C
    raise KeyboardInterrupt(f"signal {signum}")


def run(args) -> int:
    lengths = parse_ints(args.lengths, "--lengths")
    batches = parse_ints(args.batches, "--batches")
    if args.repeats < 1 or args.warmup < 0:
        raise SystemExit("sglang-trinv bench prefill: --repeats must be ≥ 1 and --warmup ≥ 0")
    if args.server_url:
        from ..evals_server import parse_server_urls

        try:
            targets = [(label, None, None, url) for label, url in parse_server_urls(args.server_url)]
        except ValueError as e:
            raise SystemExit(f"sglang-trinv bench prefill: {e}") from None
    else:
        if not args.model_path:
            raise SystemExit("sglang-trinv bench prefill: pass --model-path (launch servers) or --server-url")
        specs = [s for s in args.methods.split(",") if s.strip()]
        parsed = [parse_method(s) for s in specs]
        if not any(m == STOCK for m, _ in parsed):
            parsed.insert(0, (STOCK, None))
        labels = [m if p is None else f"{m}:{p}" for m, p in parsed]
        if len(set(labels)) != len(labels):
            raise SystemExit("sglang-trinv bench prefill: a method is listed twice")
        targets = [(label, m, p, None) for label, (m, p) in zip(labels, parsed)]
    labels = [t[0] for t in targets]
    baseline = STOCK if STOCK in labels else labels[0]
    vocab = args.vocab_size or model_vocab(args.model_path, 2048)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    server_args = shlex.split(args.server_args)
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "gpu": gpu_name(),
            "versions": versions(), "model": str(args.model_path or "(external servers)"),
            "server_args": args.server_args, "mode": "server-url" if args.server_url else "launch",
            "lengths": lengths, "batches": batches, "repeats": args.repeats, "warmup": args.warmup,
            "max_batch_tokens": args.max_batch_tokens, "vocab": vocab, "seed": args.seed, "baseline": baseline,
            "command": shlex.join(["sglang-trinv", "bench", "prefill", *sys.argv[3:]]) if sys.argv[1:3] ==
            ["bench", "prefill"] else None, "failed": []}
    rows: list[dict] = []
    servers: list[dict] = []
    old = signal.signal(signal.SIGTERM, _raise_interrupt) if hasattr(signal, "SIGTERM") else None
    interrupted = False
    def failed(rec: dict, label: str, e: Exception) -> None:
        rec["error"] = str(e)
        meta["failed"].append(f"{label}: {str(e).splitlines()[0]}")
        print(f"[{label}] FAILED: {e}", file=sys.stderr, flush=True)

    try:
        if args.server_url and len(targets) > 1:  # all up at once: warm each, then interleave the timed calls
            meta["interleaved"] = True
            ready = []
            for i, (label, _, _, url) in enumerate(targets):
                rng = random.Random(args.seed * 1000 + i)
                rec = {"label": label, "method": label, "url": url}
                servers.append(rec)
                try:
                    if not is_ready(url):
                        raise BenchError(f"{url} is not ready (no 200 from /health; is the server running?)")
                    rec["info"] = server_info(url)
                    rec["warm"] = warm_up(url, plan(lengths, batches, args)[1], args, rng, vocab)
                    ready.append((label, url, rng))
                except BenchError as e:
                    failed(rec, label, e)
            by_label, errors = bench_interleaved(ready, lengths, batches, args, vocab)
            for rec in servers:
                if rec["label"] in errors:
                    failed(rec, rec["label"], BenchError(errors[rec["label"]]))
            for label, _, _ in ready:
                rows.extend(by_label[label])
        for i, (label, method, precision, url) in enumerate(targets if not meta.get("interleaved") else []):
            rng = random.Random(args.seed * 1000 + i)
            rec: dict = {"label": label, "method": method or label}
            servers.append(rec)
            server = None
            try:
                if url is None:
                    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
                    server = ManagedServer(model_path=args.model_path, method=method, precision=precision,
                                           server_args=server_args, log_path=out / f"server-{safe}.log",
                                           host=args.host, python=args.python, launch_module=args.launch_module)
                    server.start()
                    print(f"[{label}] starting: {shlex.join(server.command())} (log: {server.log_path})",
                          file=sys.stderr, flush=True)
                    rec.update(url=server.url, command=shlex.join(server.command()), log=str(server.log_path))
                    rec["ready_s"] = server.wait_ready(args.startup_timeout)
                    print(f"[{label}] ready after {rec['ready_s']:.0f}s at {server.url}", file=sys.stderr, flush=True)
                    url = server.url
                else:
                    rec["url"] = url
                    if not is_ready(url):
                        raise BenchError(f"{url} is not ready (no 200 from /health; is the server running?)")
                rec["info"] = server_info(url)
                method_rows, rec["warm"] = bench_server(url, label, lengths, batches, args, rng, vocab)
                rows.extend(method_rows)
            except BenchError as e:
                failed(rec, label, e)
            finally:
                if server is not None:
                    rec["exit_code"] = server.stop()
                    rec["log_check"] = check_log(server.log_path.read_text(errors="replace"), method)
                    if rec["log_check"]["problems"] and not rec.get("error"):
                        meta["failed"].append(f"{label}: log: {'; '.join(rec['log_check']['problems'])}")
    except KeyboardInterrupt:
        interrupted = True
        meta["failed"].append("interrupted")
        print("sglang-trinv bench prefill: interrupted; servers stopped, partial report written", file=sys.stderr)
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    paths = write_reports(out, meta, rows, servers)
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    if interrupted:
        return 130
    failed_runs = [s for s in servers if s.get("error")]
    log_problems = [s for s in servers if (s.get("log_check") or {}).get("problems")]
    if failed_runs or (args.fail_on_log and log_problems):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Issue 7 on the GPU machine: prove ``--linear-attn-inv`` in a real SGLang server, in one device call.

Run by ``bench/device_server.sh`` (which unpacks SGLang 0.5.17, installs this project's wheel and exports
the environment); everything lands in ``--out`` (packed into ``$OUT`` by the shell script). Phases:

``eager``   the shipped tiny Qwen3-Next (``evals/models/qwen3-next-tiny-stdlib``: 3 GDN + 1 attention layer),
            a ``stock`` and a ``METHOD`` server side by side (started one after the other: the second once the
            first is ready, with ``--second-mem-fraction``), decode and prefill CUDA graphs off. Proof from
            each server's own log (start-up line; "first GDN chunk prefill served by METHOD" from the
            scheduler for the method, none for stock; no fallback; "prefill=triton"); prompt log-probs of
            one long prompt (``--long-prompt-tokens`` of held-out text) stock vs method against the bound
            below, and both against an fp32 exact-inverse transformers reference of the same weights; greedy
            continuations; ``sglang-trinv eval --server-url`` on both; ``sglang-trinv bench prefill
            --server-url`` (tiny model, short).
``graphs``  the same pair with SGLang's default CUDA graphs (decode graphs, max bs 8; prefill: SGLang's
            default): proof, log-probs, greedy decode through the captured graphs; stock(graphs) vs
            stock(eager) as the configuration noise floor.
``prefill`` ``sglang-trinv bench prefill`` in launch mode (stock, then METHOD, one at a time) on a
            dummy-weight model with Qwen3-Next-80B-A3B layer shapes (H=32 value / 16 key heads, K=V=128,
            hidden 2048, 8 layers of which 6 GDN, 64 experts top-10): prefill tokens/s and TTFT.
``tp2``     the ``eager`` pair with ``--tp-size 2`` (needs 2 GPUs): proof from both TP ranks, log-probs,
            short eval.
``evallaunch`` ``sglang-trinv eval --launch`` on the tiny model (stock, then METHOD, one server at a time,
            started and stopped by the eval itself, logs checked): the operator's one-command path.

With 2+ GPUs and both ``prefill`` and ``eager``/``graphs`` asked for, ``prefill`` runs on the last GPU while
the others run on GPU 0 (``--no-parallel`` to serialize); ``tp2`` runs after both. A phase is skipped when
less than its minimum time is left before ``--deadline-s``; ``SUMMARY.md`` says what was skipped and the
command to run it.

Bound (stock vs METHOD, same server configuration, one prompt of N tokens): PASS iff mean |Δ log p| ≤
``--max-mean-dlogp`` (0.02 nats), |Δppl| / ppl ≤ ``--max-ppl-rel`` (1 %) and top-1 agreement ≥ ``--min-top1``
(0.97); where the fp32 reference ran, also mean |log p_METHOD − log p_ref| ≤ 1.1 · mean |log p_stock −
log p_ref| + 1e-3 (ours is no further from exact arithmetic than stock). Why 0.02: both servers run the model
in bf16; at kernel level our GDN output differs from stock's by bf16 rounding (4.4e-3 relative on the whole
chunk forward, bench/results/2026-11-26-h200), which moves the tiny model's logits (|logit| ≲ 10) by ≲ 0.04
worst case and ~0.005 typically; 0.02 is 4× the typical value. max |Δ log p| is reported (a warning above
0.25), not a verdict: one near-tie can move it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from sglang_trinv.benchmarks import prefill as P

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "evals" / "models" / "qwen3-next-tiny-stdlib"
STOCK = "stock"
# serve.sh conventions (the shared device-sglang recipe, bench/device/): what SGLang 0.5.17 needs on the device machine
BASE_ARGS = ("--attention-backend triton --sampling-backend pytorch --grammar-backend none --skip-server-warmup "
             "--mm-feature-transport cpu")
EAGER = "--cuda-graph-backend-decode disabled --cuda-graph-backend-prefill disabled"
GRAPHS = "--cuda-graph-max-bs-decode 8"
MIN_S = {"eager": 200, "graphs": 150, "prefill": 240, "tp2": 200,  # a phase starts only with this much time left
         "evallaunch": 150}


def a3b_shape_config(layers: int = 8) -> dict:
    """Qwen3-Next-80B-A3B per-layer shapes, fewer layers and experts (dummy weights: nothing to download)."""
    types = ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(layers)]
    return {
        "architectures": ["Qwen3NextForCausalLM"], "model_type": "qwen3_next", "dtype": "bfloat16",
        "torch_dtype": "bfloat16", "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 5120,
        "num_hidden_layers": layers, "layer_types": types, "full_attention_interval": 4,
        "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 256,
        "linear_conv_kernel_dim": 4, "linear_key_head_dim": 128, "linear_value_head_dim": 128,
        "linear_num_key_heads": 16, "linear_num_value_heads": 32,
        "num_experts": 64, "num_experts_per_tok": 10, "moe_intermediate_size": 512,
        "shared_expert_intermediate_size": 512, "decoder_sparse_step": 1, "mlp_only_layers": [],
        "norm_topk_prob": True, "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 10000000.0,
        "partial_rotary_factor": 0.25,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25},
        "max_position_embeddings": 65536, "tie_word_embeddings": False, "attention_bias": False,
        "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645, "use_cache": True,
        "router_aux_loss_coef": 0.001, "output_router_logits": False,
    }


# ------------------------------------------------------------------------------------------- small helpers
def gpu_count() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        if out.returncode == 0:
            return sum(1 for ln in out.stdout.splitlines() if ln.startswith("GPU "))
    except (OSError, subprocess.SubprocessError):
        pass
    try:  # no nvidia-smi: ask torch in a child (this process stays without a CUDA context)
        out = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
                             capture_output=True, text=True, timeout=120)
        return int(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return 0


def sh(cmd: list[str], timeout: float, env=None, cwd=None) -> dict:
    """Run a command, keep rc, wall time and the output tail (never raises but on Ctrl-C). On a timeout or an
    interrupt the child gets SIGTERM (``bench prefill`` then stops its servers) and 40 s before SIGKILL."""
    t0 = time.time()
    log = Path(cwd or ".") / f".sh-{os.getpid()}-{int(t0 * 1000)}.log"
    rc: object = None
    with open(log, "w+") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        try:
            rc = p.wait(timeout=max(timeout, 1))
        except (subprocess.TimeoutExpired, KeyboardInterrupt) as e:
            p.terminate()
            try:
                p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if isinstance(e, KeyboardInterrupt):
                raise
            rc = "timeout"
        finally:
            f.seek(0)
            out = f.read()
    log.unlink(missing_ok=True)
    return {"cmd": shlex.join(cmd), "rc": rc, "seconds": time.time() - t0, "tail": out[-4000:]}


def long_prompt(model: Path, n: int) -> list[int]:
    from transformers import AutoTokenizer

    from sglang_trinv.evals_data import load_corpus, token_stream

    tok = AutoTokenizer.from_pretrained(str(model))
    docs, _ = load_corpus(None)
    ids = token_stream(tok, docs)
    if len(ids) < n:
        raise RuntimeError(f"held-out corpus has only {len(ids)} tokens, {n} asked for")
    return ids[:n]


def compare_logprobs(a: list[float], b: list[float], top_a: list, top_b: list) -> dict:
    d = [abs(x - y) for x, y in zip(a, b)]
    n = len(d)
    ppl_a, ppl_b = math.exp(-sum(a) / n), math.exp(-sum(b) / n)
    worst = max(range(n), key=d.__getitem__)
    agree = sum(x == y and x is not None for x, y in zip(top_a, top_b)) / n
    return {"tokens": n, "mean_abs_dlogp": sum(d) / n, "max_abs_dlogp": d[worst], "max_at": worst + 1,
            "ppl_a": ppl_a, "ppl_b": ppl_b, "ppl_rel": (ppl_b - ppl_a) / ppl_a, "top1_agree": agree,
            "identical": all(x == y for x, y in zip(a, b))}


def fp32_reference(model: Path, ids: list[int]) -> list[float]:
    """log p(token_t | <t) of ``ids[1:]`` by transformers in fp32 with the exact (fp64 solve) inverse."""
    import torch

    from sglang_trinv import evals as E

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    m, _ = E.load_model(model, dev, torch.float32)
    spec = [s for s in E.parse_methods("exact") if s.method == "exact"][0]
    with E.gdn_inversion(spec):
        lp = E.logprobs(m, torch.tensor([ids]))[0]
    out = lp.gather(1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()
    del m
    if dev == "cuda":
        torch.cuda.empty_cache()
    return out


def greedy(url: str, ids: list[int], n: int) -> list[int]:
    r = P.http_json(f"{url}/generate", {"input_ids": ids, "sampling_params": {"max_new_tokens": n,
                                                                                "temperature": 0.0}}, timeout=600)
    r = r[0] if isinstance(r, list) else r
    return list(r.get("output_ids") or [])


# ------------------------------------------------------------------------------------------- the run
class Run:
    def __init__(self, args, argv: list[str]):
        self.args, self.argv = args, argv
        self.t0 = time.time()
        self.out = Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.method, _, self.precision = args.method.partition(":")
        self.precision = self.precision or None
        self.summary = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "method": args.method,
                        "phases_asked": args.phases, "phases": {}, "skipped": {}, "env": {}}
        self.saved_lp: dict[str, list[float]] = {}

    def left(self) -> float:
        return self.args.deadline_s - (time.time() - self.t0)

    def save(self) -> None:
        self.summary["elapsed_s"] = time.time() - self.t0
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=1, default=str))
        (self.out / "SUMMARY.md").write_text(render(self.summary))

    # ------------------------------------------------------------------ env
    def env(self) -> None:
        e = self.summary["env"]
        e["gpu"] = P.gpu_name()
        e["gpus"] = self.args.assume_gpus if self.args.assume_gpus is not None else gpu_count()
        e["versions"] = P.versions()
        e["compat_shim"] = os.environ.get("TRINV_COMPAT_SHIM", "not set (run outside device_server.sh?)")
        e["site"] = os.environ.get("TRINV_SITE")
        e["python"] = self.args.python
        try:
            from importlib.metadata import entry_points

            e["plugin_entry_points"] = [f"{ep.name} -> {ep.value}" for ep in entry_points(group="sglang.srt.plugins")]
        except Exception as ex:  # noqa: BLE001
            e["plugin_entry_points"] = f"error: {ex}"
        import sglang_trinv

        e["sglang_trinv_file"] = sglang_trinv.__file__

    # ------------------------------------------------------------------ servers
    def servers(self, phase_dir: Path, extra: str, model: Path, gpus: str | None = None) -> dict:
        env = dict(os.environ)
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpus
        args = shlex.split(self.args.base_server_args) + shlex.split(extra)
        out = {}
        for label, method, prec in ((STOCK, STOCK, None), (self.args.method, self.method, self.precision)):
            out[label] = P.ManagedServer(model_path=str(model), method=method, precision=prec, server_args=args,
                                         log_path=phase_dir / f"server-{label.replace('/', '_').replace(':', '_')}.log",
                                         python=self.args.python, launch_module=self.args.launch_module, env=env,
                                         cwd=str(self.out))
        return out

    def start_pair(self, res: dict, pair: dict) -> None:
        from concurrent.futures import ThreadPoolExecutor

        # one after the other: SGLang sizes its pools as (free memory) - total * (1 - mem_fraction_static), so a
        # second server profiling while the first allocates fails ("Not enough GPU memory for hybrid ... state
        # cache", H200 x2, 2026-11-27); the second one is started once the first is ready, with a higher fraction
        for i, (label, s) in enumerate(pair.items()):
            if i > 0 and self.args.second_mem_fraction:
                s.server_args = list(s.server_args) + ["--mem-fraction-static", str(self.args.second_mem_fraction)]
            s.start()
            rec = res["servers"].setdefault(label, {})
            rec.update(command=shlex.join(s.command()), log=str(s.log_path), url=s.url)
            rec["ready_s"] = s.wait_ready(max(30.0, min(self.args.startup_timeout, self.left() - 20)))

        def first(s):  # Triton compiles every kernel on first use (~2 min on a fresh 0.5.17 server): overlap them
            t = time.time()
            P.generate_batch(s.url, [list(range(10, 74))], timeout=max(30.0, self.left()))
            return time.time() - t

        with ThreadPoolExecutor(len(pair)) as ex:
            times = dict(zip(pair, ex.map(first, pair.values())))
        for label, t in times.items():
            res["servers"][label]["first_request_s"] = t
        self.save()

    def stop_pair(self, res: dict, pair: dict, ranks: int = 1) -> None:
        for label, s in pair.items():
            if s.proc is None:
                continue
            rec = res["servers"].setdefault(label, {})
            rec["exit_code"] = s.stop()
            rec["log_check"] = P.check_log(s.log_path.read_text(errors="replace"), s.method)
            rec["log_lines"] = [ln[:400] for ln in s.log_path.read_text(errors="replace").splitlines()
                                if "sglang-trinv" in ln or "Linear attention kernel backend" in ln][:12]
            served = rec["log_check"]["served_lines"]
            if s.method != STOCK and 0 < served < ranks:  # each TP rank's scheduler logs its first prefill
                rec["log_check"]["warnings"].append(f"'served by' logged by {served} of {ranks} TP ranks")
            if rec["log_check"]["problems"]:
                res["failures"].append(f"{label}: {'; '.join(rec['log_check']['problems'])}")

    # ------------------------------------------------------------------ checks
    def logprob_check(self, res: dict, pair: dict, ids: list[int], key: str, ref: list[float] | None) -> None:
        from sglang_trinv.evals_server import prompt_logprobs

        lp_s, top_s = prompt_logprobs(pair[STOCK].url, ids, timeout=max(60.0, self.left()))
        lp_m, top_m = prompt_logprobs(pair[self.args.method].url, ids, timeout=max(60.0, self.left()))
        self.saved_lp[f"{key}:stock"] = lp_s
        self.saved_lp[f"{key}:method"] = lp_m
        c = compare_logprobs(lp_s, lp_m, top_s, top_m)
        a = self.args
        c["bound"] = {"max_mean_dlogp": a.max_mean_dlogp, "max_ppl_rel": a.max_ppl_rel, "min_top1": a.min_top1}
        fails = []
        if not c["mean_abs_dlogp"] <= a.max_mean_dlogp:
            fails.append(f"mean |Δ log p| {c['mean_abs_dlogp']:.3g} > {a.max_mean_dlogp}")
        if not abs(c["ppl_rel"]) <= a.max_ppl_rel:
            fails.append(f"|Δppl|/ppl {abs(c['ppl_rel']):.3g} > {a.max_ppl_rel}")
        if not c["top1_agree"] >= a.min_top1:
            fails.append(f"top-1 agreement {c['top1_agree']:.4f} < {a.min_top1}")
        if ref is not None:
            ds = sum(abs(x - y) for x, y in zip(lp_s, ref)) / len(ref)
            dm = sum(abs(x - y) for x, y in zip(lp_m, ref)) / len(ref)
            c["ref_mean_abs_stock"], c["ref_mean_abs_method"] = ds, dm
            c["ref_max_abs_stock"] = max(abs(x - y) for x, y in zip(lp_s, ref))
            c["ref_max_abs_method"] = max(abs(x - y) for x, y in zip(lp_m, ref))
            if not dm <= 1.1 * ds + 1e-3:
                fails.append(f"further from the fp32 reference than stock: {dm:.3g} > 1.1·{ds:.3g} + 1e-3")
        c["warnings"] = [f"max |Δ log p| {c['max_abs_dlogp']:.3g} at token {c['max_at']}"] \
            if c["max_abs_dlogp"] > 0.25 else []
        c["verdict"] = "FAIL: " + "; ".join(fails) if fails else "PASS"
        if fails:
            res["failures"].append(f"log-probs {key}: {'; '.join(fails)}")
        res[f"logprobs_{key}"] = c
        self.save()

    def greedy_check(self, res: dict, pair: dict, ids: list[int], key: str) -> None:
        n = self.args.greedy_tokens
        a, b = greedy(pair[STOCK].url, ids, n), greedy(pair[self.args.method].url, ids, n)
        same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        res[f"greedy_{key}"] = {"tokens": n, "stock": a, "method": b, "common_prefix": same,
                                "identical": a == b and len(a) == n}

    def completions_check(self, res: dict, pair: dict, ids: list[int]) -> None:
        """The server side of `sglang-trinv eval --lm-eval`: lm-eval's local-completions scores with
        /v1/completions (echo + logprobs). Its prompt log-probs must equal /generate's on the same server
        (informational: a server without echo support is recorded, not failed)."""
        import urllib.request

        from sglang_trinv.evals_server import prompt_logprobs

        out = {}
        for label, srv in pair.items():
            body = {"model": "default", "prompt": ids, "max_tokens": 1, "echo": True, "logprobs": 1,
                    "temperature": 0.0}
            try:
                req = urllib.request.Request(f"{srv.url}/v1/completions", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=max(60.0, self.left())) as r:
                    resp = json.loads(r.read())
                tl = resp["choices"][0]["logprobs"]["token_logprobs"]
                lp, _ = prompt_logprobs(srv.url, ids, timeout=max(60.0, self.left()))
                d = max(abs(float(a) - b) for a, b in zip(tl[1:len(ids)], lp))
                out[label] = {"n": len(tl), "max_abs_vs_generate": d, "ok": d <= 1e-3}
            except Exception as e:  # noqa: BLE001 (record what the server answered)
                out[label] = {"error": f"{type(e).__name__}: {e}"[:300], "ok": False}
        res["completions_echo"] = out

    def eval_check(self, res: dict, pair: dict, out: Path, max_tokens: int) -> None:
        urls = [f"--server-url={STOCK}={pair[STOCK].url}", f"--server-url={self.args.method}={pair[self.args.method].url}"]
        r = sh([self.args.python, "-m", "sglang_trinv.cli", "eval", *urls, "--model", str(self.args.model),
                "--ctx", str(self.args.eval_ctx), "--max-tokens", str(max_tokens), "--out", str(out), "--quiet"],
               timeout=min(300.0, self.left() - 20), cwd=str(self.out))
        r["report"] = (out / "report.md").read_text() if (out / "report.md").is_file() else None
        res["eval"] = r
        if r["rc"] != 0:
            res["failures"].append(f"eval exited {r['rc']}")

    def prefill_urls(self, res: dict, pair: dict, out: Path) -> None:
        a = self.args
        urls = [f"--server-url={STOCK}={pair[STOCK].url}", f"--server-url={a.method}={pair[a.method].url}"]
        r = sh([a.python, "-m", "sglang_trinv.cli", "bench", "prefill", *urls, "--model-path", str(a.model),
                "--lengths", a.tiny_lengths, "--batches", a.tiny_batches, "--repeats", "5", "--out", str(out),
                "--quiet"], timeout=min(240.0, self.left() - 20), cwd=str(self.out))
        r["report"] = (out / "prefill.md").read_text() if (out / "prefill.md").is_file() else None
        res["prefill_tiny"] = r
        if r["rc"] != 0:
            res["failures"].append(f"bench prefill (tiny, --server-url) exited {r['rc']}")

    # ------------------------------------------------------------------ phases
    def phase(self, name: str, fn, *a) -> None:
        if self.left() < MIN_S[name] * self.args.min_scale:
            self.summary["skipped"][name] = f"{self.left():.0f}s left < {MIN_S[name] * self.args.min_scale:.0f}s"
            self.save()
            return
        res = self.summary["phases"].setdefault(name, {"servers": {}, "failures": [], "errors": []})
        t = time.time()
        try:
            fn(res, *a)
        except KeyboardInterrupt:
            res["errors"].append("interrupted (deadline or Ctrl-C)")
            raise
        except Exception as e:  # noqa: BLE001 (record and go on with the next phase)
            res["errors"].append(f"{type(e).__name__}: {e}\n{traceback.format_exc()[-2000:]}")
        finally:
            res["seconds"] = time.time() - t
            self.save()

    def tiny_phase(self, res: dict, name: str, extra: str, gpus: str | None, with_eval: bool,
                   eval_tokens: int) -> None:
        d = self.out / name
        pair = self.servers(d, extra, self.args.model, gpus)
        try:
            self.start_pair(res, pair)
            ids = long_prompt(self.args.model, self.args.long_prompt_tokens)
            ref = None
            if self.args.reference and "ref" not in self.saved_lp:
                try:
                    t = time.time()
                    self.saved_lp["ref"] = fp32_reference(self.args.model, ids)
                    res["reference_s"] = time.time() - t
                except Exception as e:  # noqa: BLE001
                    res["errors"].append(f"fp32 reference: {type(e).__name__}: {e}")
            ref = self.saved_lp.get("ref")
            self.logprob_check(res, pair, ids, name, ref)
            if name != "eager" and "eager:stock" in self.saved_lp:  # configuration noise floor: stock vs stock
                base = self.saved_lp["eager:stock"]
                cur = self.saved_lp[f"{name}:stock"]
                res["stock_vs_eager_stock"] = compare_logprobs(base, cur, [None] * len(base), [None] * len(cur))
            self.greedy_check(res, pair, ids[: self.args.greedy_prompt_tokens], name)
            if name == "eager":
                self.completions_check(res, pair, ids[:256])
            if with_eval:
                self.eval_check(res, pair, d / "eval", eval_tokens)
                if name == "eager":
                    self.prefill_urls(res, pair, d / "prefill-tiny")
        finally:
            self.stop_pair(res, pair, ranks=2 if name == "tp2" else 1)

    def prefill_phase(self, res: dict, gpus: str | None) -> None:
        a = self.args
        d = self.out / "prefill"
        model = d / "model-a3b-shapes"
        model.mkdir(parents=True, exist_ok=True)
        (model / "config.json").write_text(json.dumps(a3b_shape_config(a.a3b_layers), indent=1))
        env = dict(os.environ)
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpus
        server_args = (f"{a.base_server_args} --load-format dummy --skip-tokenizer-init --mem-fraction-static 0.6 "
                       f"--linear-attn-prefill-backend triton {EAGER}").strip()
        cmd = [a.python, "-m", "sglang_trinv.cli", "bench", "prefill", "--model-path", str(model),
               "--methods", f"{STOCK},{a.method}", f"--server-args={server_args}", "--lengths", a.prefill_lengths,
               "--batches", a.prefill_batches, "--max-batch-tokens", str(a.prefill_max_batch_tokens),
               "--repeats", "2", "--out", str(d), "--quiet", "--startup-timeout", str(int(max(60, self.left() / 2))),
               "--python", a.python]
        if a.launch_module != "sglang.launch_server":
            cmd += ["--launch-module", a.launch_module]
        r = sh(cmd, timeout=self.left() - 15, env=env, cwd=str(self.out))
        r["report"] = (d / "prefill.md").read_text() if (d / "prefill.md").is_file() else None
        res["bench_prefill"] = r
        if r["rc"] != 0:
            res["failures"].append(f"bench prefill exited {r['rc']}")

    def evallaunch_phase(self, res: dict, gpus: str | None) -> None:
        """`sglang-trinv eval --launch`: the eval starts, checks and stops one server per method itself."""
        a = self.args
        d = self.out / "evallaunch"
        env = dict(os.environ)
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpus
        cmd = [a.python, "-m", "sglang_trinv.cli", "eval", "--launch", "--model-path", str(a.model),
               "--methods", f"{STOCK},{a.method}", f"--server-args={a.base_server_args} {EAGER}".rstrip(),
               "--ctx", str(a.eval_ctx), "--max-tokens", str(min(a.eval_max_tokens, 4096)), "--out", str(d),
               "--quiet", "--startup-timeout", str(int(max(60, self.left() / 3))), "--server-python", a.python]
        if a.launch_module != "sglang.launch_server":
            cmd += ["--launch-module", a.launch_module, "--no-fail-on-log"]
        r = sh(cmd, timeout=self.left() - 15, env=env, cwd=str(self.out))
        r["report"] = (d / "report.md").read_text() if (d / "report.md").is_file() else None
        res["eval_launch"] = r
        if r["rc"] != 0:
            res["failures"].append(f"eval --launch exited {r['rc']}")

    def run(self) -> int:
        a = self.args
        self.env()
        self.save()
        phases = [p.strip() for p in a.phases.split(",") if p.strip()]
        unknown = set(phases) - set(MIN_S)
        if unknown:
            raise SystemExit(f"unknown phases {sorted(unknown)}; choose from {sorted(MIN_S)}")
        n = self.summary["env"]["gpus"]
        if "tp2" in phases and n < 2 and not a.force_tp2:
            self.summary["skipped"]["tp2"] = f"{n} GPU(s) visible; run on nvidia-h100-x2 with --phases tp2"
            phases.remove("tp2")
        parallel = a.parallel and n >= 2 and "prefill" in phases and ({"eager", "graphs"} & set(phases))
        sub = None
        if parallel:  # prefill on the last GPU, by a child driver with its own output folder
            phases.remove("prefill")
            sub_out = self.out / "prefill-gpu"
            cmd = [sys.executable, __file__, *self.argv, "--phases", "prefill", "--out", str(sub_out),
                   "--no-parallel", "--deadline-s", str(int(self.left() - 10)), "--gpu", str(n - 1)]
            self.summary["parallel_prefill"] = {"gpu": n - 1, "out": str(sub_out), "cmd": shlex.join(cmd)}
            sub = subprocess.Popen(cmd, stdout=open(self.out / "prefill-gpu.log", "w"), stderr=subprocess.STDOUT)
            gpus0 = "0"
        else:
            gpus0 = a.gpu
        try:
            if "eager" in phases:
                self.phase("eager", self.tiny_phase, "eager", EAGER, gpus0, True, a.eval_max_tokens)
            if "graphs" in phases:
                self.phase("graphs", self.tiny_phase, "graphs", GRAPHS, gpus0, False, 0)
            if "prefill" in phases:
                self.phase("prefill", self.prefill_phase, a.gpu)
            if sub is not None:
                sub.wait(timeout=max(1.0, self.left()))
                self.summary["parallel_prefill"]["rc"] = sub.returncode
                sj = self.out / "prefill-gpu" / "summary.json"
                if sj.is_file():
                    child = json.loads(sj.read_text())
                    self.summary["phases"].update(child.get("phases", {}))
                    self.summary["skipped"].update(child.get("skipped", {}))
                sub = None
            if "tp2" in phases:
                self.phase("tp2", self.tiny_phase, "tp2", f"{EAGER} --tp-size 2 {a.tp2_extra}".strip(), None, True,
                           min(a.eval_max_tokens, 4096))
            if "evallaunch" in phases:
                self.phase("evallaunch", self.evallaunch_phase, gpus0)
        except KeyboardInterrupt:
            self.summary["interrupted"] = True
        finally:
            if sub is not None and sub.poll() is None:
                sub.send_signal(signal.SIGINT)  # SIGINT: the child stops its servers and writes its summary
                try:
                    sub.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    sub.kill()
            self.summary["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
            self.save()
        print(render(self.summary))
        print(verdicts(self.summary))
        bad = [p for p, r in self.summary["phases"].items() if r.get("failures") or r.get("errors")]
        return 1 if bad or self.summary.get("interrupted") else 0


# ------------------------------------------------------------------------------------------- report
def _f(x, spec=".3g"):
    return format(x, spec) if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)


def render(s: dict) -> str:
    e = s.get("env", {})
    v = e.get("versions", {})
    L = [f"# sglang-trinv in a real SGLang server — {e.get('gpu')} — {s.get('started')}", "",
         f"- method `{s.get('method')}`; phases asked: {s.get('phases_asked')}; elapsed {s.get('elapsed_s', 0):.0f} s",
         f"- SGLang {v.get('sglang')}, sglang-trinv {v.get('sglang-trinv')} ({e.get('sglang_trinv_file')}), torch "
         f"{v.get('torch')}, triton {v.get('triton')}, transformers {v.get('transformers')}, flashinfer "
         f"{v.get('flashinfer-python')}, Python {v.get('python')}; GPUs visible: {e.get('gpus')}",
         f"- plugin entry points: {e.get('plugin_entry_points')}",
         f"- SGLang 0.5.17 compatibility shim (ServerArgs.resolve_once): {e.get('compat_shim')}", ""]
    if s.get("skipped"):
        L += ["**Skipped:** " + "; ".join(f"{k} ({v})" for k, v in s["skipped"].items()) +
              f" → rerun with `bash bench/device_server.sh --phases {','.join(s['skipped'])}`", ""]
    if s.get("interrupted"):
        L += ["**Interrupted** (deadline or signal): later steps did not run.", ""]
    for name, r in s.get("phases", {}).items():
        verdict = "FAIL" if r.get("failures") or r.get("errors") else "ok"
        L += [f"## {name} — {verdict} ({r.get('seconds', 0):.0f} s)", ""]
        if r.get("servers"):
            L += ["| server | ready | first request | log proof | exit |", "|---|---|---|---|---|"]
            for label, sv in r["servers"].items():
                chk = sv.get("log_check") or {}
                proof = "; ".join(chk.get("problems", [])) or (
                    f"{chk.get('served_lines', 0)}× served by {','.join(chk.get('served_methods', [])) or '–'}; "
                    f"start-up {chk.get('startup_lines', 0)}×; backend {chk.get('backend') or 'not logged'}")
                if chk.get("warnings"):
                    proof += " (" + "; ".join(chk["warnings"]) + ")"
                L.append(f"| {label} | {_f(sv.get('ready_s'), '.0f')} s | {_f(sv.get('first_request_s'), '.1f')} s | "
                         f"{proof} | {sv.get('exit_code')} |")
            L.append("")
            for label, sv in r["servers"].items():
                if sv.get("log_lines"):
                    L += [f"`{label}` log lines:", "```", *sv["log_lines"], "```"]
        for key, c in r.items():
            if key.startswith("logprobs_"):
                L += [f"Prompt log-probs, {c['tokens']} tokens, stock vs method: **{c['verdict']}** — mean |Δ log p| "
                      f"{_f(c['mean_abs_dlogp'])}, max {_f(c['max_abs_dlogp'])} (token {c['max_at']}), ppl "
                      f"{_f(c['ppl_a'], '.4f')} → {_f(c['ppl_b'], '.4f')} ({_f(c['ppl_rel'] * 100)} %), top-1 "
                      f"agreement {_f(c['top1_agree'], '.4f')}, bitwise identical: {c['identical']}; bound {c['bound']}"]
                if "ref_mean_abs_stock" in c:
                    L.append(f"  vs fp32 exact-inverse reference: mean |Δ| stock {_f(c['ref_mean_abs_stock'])}, method "
                             f"{_f(c['ref_mean_abs_method'])}; max stock {_f(c['ref_max_abs_stock'])}, method "
                             f"{_f(c['ref_max_abs_method'])}")
                L += [f"  warning: {w}" for w in c.get("warnings", [])] + [""]
            if key.startswith("greedy_"):
                L += [f"Greedy {c['tokens']} tokens: identical {c['identical']}, common prefix {c['common_prefix']}", ""]
        if "completions_echo" in r:  # lm-eval's path: /v1/completions echo log-probs vs /generate's
            L += ["/v1/completions echo log-probs vs /generate (same server): " + "; ".join(
                f"{lab}: " + (f"max |Δ| {_f(x['max_abs_vs_generate'])} over {x['n']} tokens ({'ok' if x['ok'] else 'DIFFERENT'})"
                              if "error" not in x else f"error {x['error']}") for lab, x in r["completions_echo"].items()), ""]
        if "stock_vs_eager_stock" in r:
            c = r["stock_vs_eager_stock"]
            L += [f"Noise floor, stock here vs stock eager: mean |Δ log p| {_f(c['mean_abs_dlogp'])}, max "
                  f"{_f(c['max_abs_dlogp'])}, identical {c['identical']}", ""]
        for key, title in (("eval", "sglang-trinv eval --server-url"), ("eval_launch", "sglang-trinv eval --launch"),
                           ("prefill_tiny", "bench prefill (tiny)"),
                           ("bench_prefill", "bench prefill (A3B layer shapes, dummy weights)")):
            if key in r:
                x = r[key]
                L += [f"### {title}: rc {x['rc']} ({x['seconds']:.0f} s)", "", f"`{x['cmd']}`", ""]
                L += [x["report"]] if x.get("report") else ["```", x.get("tail", "")[-2500:], "```"]
                L.append("")
        for f in r.get("failures", []):
            L.append(f"- FAILURE: {f}")
        for err in r.get("errors", []):
            L += ["- ERROR:", "```", err, "```"]
        L.append("")
    return "\n".join(L) + "\n"


def verdicts(s: dict) -> str:
    """A few lines for the end of the device call's output (the full story: SUMMARY.md)."""
    L = ["=== VERDICTS ==="]
    for name, r in s.get("phases", {}).items():
        parts = ["FAIL" if r.get("failures") or r.get("errors") else "ok"]
        for label, sv in r.get("servers", {}).items():
            chk = sv.get("log_check") or {}
            parts.append(f"{label}: served {chk.get('served_lines', '?')}× {','.join(chk.get('served_methods', []))}"
                         f" {'PROBLEM ' + '; '.join(chk['problems']) if chk.get('problems') else ''}".rstrip())
        for key, c in r.items():
            if key.startswith("logprobs_"):
                parts.append(f"logprobs {c['verdict'].split(':')[0]} mean|Δ| {_f(c['mean_abs_dlogp'])} "
                             f"top1 {_f(c['top1_agree'], '.4f')}")
        for key in ("eval", "eval_launch", "prefill_tiny", "bench_prefill"):
            if key in r:
                parts.append(f"{key} rc {r[key]['rc']}")
        parts += [f"error: {e.splitlines()[0][:200]}" for e in r.get("errors", [])]
        L.append(f"{name}: " + " | ".join(parts))
    for k, v in s.get("skipped", {}).items():
        L.append(f"{k}: skipped ({v})")
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--phases", default="eager,graphs,prefill,tp2")
    ap.add_argument("--method", default="blockdoubling", help="METHOD or METHOD:PRECISION")
    ap.add_argument("--model", type=Path, default=TINY)
    ap.add_argument("--deadline-s", type=float, default=540.0, help="seconds from start for all phases")
    ap.add_argument("--min-scale", type=float, default=1.0, help=argparse.SUPPRESS)  # tests: 0
    ap.add_argument("--parallel", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--gpu", default=None, help="CUDA_VISIBLE_DEVICES for the phases (default: inherit)")
    ap.add_argument("--force-tp2", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--assume-gpus", type=int, default=None, help=argparse.SUPPRESS)  # CPU dry runs of --parallel
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--launch-module", default="sglang.launch_server", help=argparse.SUPPRESS)
    ap.add_argument("--base-server-args", default=BASE_ARGS + " --mem-fraction-static 0.3")
    ap.add_argument("--startup-timeout", type=float, default=400.0)
    # 2026-11-27, 2× H200: the stock TP=2 server hung after FlashInfer's TRTLLM all-reduce-fusion workspace set-up
    # ("[SymmDeviceMemory]" lines, then nothing for 249 s); these flags keep TP=2 on NCCL's plain all-reduce
    ap.add_argument("--tp2-extra", default="--enforce-disable-flashinfer-allreduce-fusion --disable-custom-all-reduce",
                    help="extra server arguments for the tp2 phase")
    ap.add_argument("--second-mem-fraction", type=float, default=0.6,
                    help="--mem-fraction-static of the second server of a pair (started after the first is ready)")
    ap.add_argument("--long-prompt-tokens", type=int, default=4000, help="≤ the model's context (tiny: 4096)")
    ap.add_argument("--greedy-tokens", type=int, default=32)
    ap.add_argument("--greedy-prompt-tokens", type=int, default=256)
    ap.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                    help="fp32 exact-inverse transformers reference of the long prompt")
    ap.add_argument("--eval-max-tokens", type=int, default=16384)
    ap.add_argument("--eval-ctx", type=int, default=512)
    ap.add_argument("--tiny-lengths", default="1024,4000")
    ap.add_argument("--tiny-batches", default="1,8")
    ap.add_argument("--prefill-lengths", default="1024,4096,16384,32768")
    ap.add_argument("--prefill-batches", default="1,4,16")
    ap.add_argument("--prefill-max-batch-tokens", type=int, default=65536)
    ap.add_argument("--a3b-layers", type=int, default=8)
    ap.add_argument("--max-mean-dlogp", type=float, default=0.02)
    ap.add_argument("--max-ppl-rel", type=float, default=0.01)
    ap.add_argument("--min-top1", type=float, default=0.97)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    P.parse_method(args.method)  # unknown method: exit before anything starts
    args.model = args.model.resolve()
    old = signal.signal(signal.SIGTERM, P._raise_interrupt)  # timeout/job stop: servers stopped, summary written
    try:
        return Run(args, argv).run()
    finally:
        signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":
    sys.exit(main())

"""``sglang-trinv eval`` on the shipped tiny Qwen3-Next model (CPU, reference backend, short slices).

Why: the harness is only useful if (1) its hook computes exactly what transformers computes when the
inversion is exact, (2) the stable methods stay within stated bounds of stock on real text, (3) the
unstable ones are reported as they behave, (4) reports/exit codes/errors work, and (5) the server client
parses SGLang's logprob schema into the same numbers as the in-process run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sglang_trinv import evals as E
from sglang_trinv.cli import main as cli_main
from sglang_trinv.evals_data import load_corpus, token_stream

MODEL = E.DEFAULT_MODEL
pytestmark = pytest.mark.skipif(not (MODEL / "model.safetensors").is_file(), reason="shipped model missing")


@pytest.fixture(scope="module")
def model_tok():
    torch.set_num_threads(1)
    return E.load_model(MODEL)


@pytest.fixture(scope="module")
def heldout_ids(model_tok):
    docs, _ = load_corpus(None)
    return token_stream(model_tok[1], docs)


def test_hook_with_exact_inverse_reproduces_transformers(model_tok, heldout_ids):
    """The swapped chunk function is transformers' algorithm: exact inverse ⇒ same logits; it runs once per
    GDN layer (3) per forward, on a length that is not a multiple of the chunk (partial last chunk)."""
    model, _ = model_tok
    x = torch.tensor([heldout_ids[1000:1000 + 150]])
    ref = E.logprobs(model, x)
    with E.gdn_inversion(E.parse_methods("exact")[-1]) as st:
        got = E.logprobs(model, x)
    assert st.calls == 3 and st.chunks == 3 * 4 * 3  # layers × value heads × ceil(150/64)
    assert (got - ref).abs().max() < 2e-4


def test_stable_methods_agree_with_stock(model_tok):
    """Stable methods vs stock on 2 held-out windows of 256 tokens: measured KL ~1e-9…1e-7, top-1 = 1;
    bounds have ≥ 100× margin. A different inversion must still change *something* (KL > 0 for at least
    one method), or the hook would not be in the loop."""
    model, tok = model_tok
    docs, _ = load_corpus(None)
    specs = E.parse_methods("stock,blockdoubling,column_sweep,forward_substitution@ieee,exact")
    res = E.evaluate(model, tok, specs, docs, ctx=256, max_tokens=512, stress_len=0, progress=False)
    assert [r.label for r in res] == [s.label for s in specs]
    assert res[0].tokens == 510
    for r in res[1:]:
        assert r.kl_mean < 1e-5, r
        assert r.top1_agree >= 0.995, r
        assert abs(r.ppl_rel_delta) < 1e-3, r
        assert r.nonfinite_logits == 0
    assert max(r.max_abs_logprob_diff for r in res[1:]) > 0 and min(r.kl_mean for r in res[1:]) >= 0


def test_stress_prompt_neumann_diverges(model_tok):
    """One token repeated makes consecutive keys identical (A_ij = β·e^{g_i−g_j}): measured on this model,
    Neumann's product form loses the prediction (fp32: mean KL 0.35 nats, top-1 0.90; fp16: inf/NaN
    logits), Newton–Schulz drifts (KL 0.04), the stable methods stay at ~1e-7. A periodic line
    (repeat_line) does not trigger it: every method agrees there."""
    model, tok = model_tok
    specs = E.parse_methods("stock,blockdoubling,column_sweep,neumann,neumann@fp16,newton_schulz")
    res = E.evaluate(model, tok, specs, ["x"], ctx=64, stress_len=192, progress=False)
    by = {r.label: r.stress for r in res}
    for label in ("blockdoubling", "column_sweep"):
        for s in by[label].values():
            assert s["kl_mean"] < 1e-5 and s["top1_agree"] == 1.0 and s["max_abs_inverse"] < 10
    rep = by["neumann"]["repeat_token"]
    assert rep["kl_mean"] > 1e-2 and rep["top1_agree"] < 0.99 and rep["max_abs_inverse"] > 100
    assert by["neumann@fp16"]["repeat_token"]["nonfinite_logits"] > 0
    assert by["newton_schulz"]["repeat_token"]["kl_mean"] > 1e-3
    for label in by:
        assert by[label]["repeat_line"]["kl_mean"] < 1e-5


def test_report_files_and_fail_if_worse(tmp_path):
    """CLI end to end on a short slice: report.{json,md,png} written, numbers in JSON; a zero KL threshold
    makes a non-stock method breach ⇒ exit code 1, and the breach is in the report."""
    out = tmp_path / "rep"
    argv = ["eval", "--methods", "stock,blockdoubling", "--max-tokens", "300", "--ctx", "150", "--no-tasks",
            "--stress-len", "0", "--out", str(out), "--quiet"]
    assert cli_main(argv) == 0
    data = json.loads((out / "report.json").read_text())
    assert [r["label"] for r in data["results"]] == ["stock", "blockdoubling"]
    assert math.isfinite(data["results"][0]["ppl"]) and data["results"][0]["tokens"] == 298
    assert (out / "report.png").stat().st_size > 10_000
    assert "| `blockdoubling` |" in (out / "report.md").read_text()
    assert cli_main(argv + ["--fail-if-worse", "--max-kl", "0"]) == 1
    assert "BREACH blockdoubling: mean KL" in (out / "report.md").read_text()
    assert cli_main(argv + ["--fail-if-worse", "--max-kl", "0", "--fail-skip", "blockdoubling"]) == 0
    (out / "report.md").unlink()
    assert cli_main(["eval", "--rerender", str(out / "report.json")]) == 0
    assert "| `blockdoubling` |" in (out / "report.md").read_text()


def test_tasks_run(model_tok):
    """Multiple choice and passkey produce accuracies in [0, 1] and per-depth entries."""
    model, tok = model_tok
    items = E.load_mc(E.DEFAULT_MC)[:3]
    res = E.evaluate(model, tok, E.parse_methods("stock,blockdoubling"), ["def f(x):\n    return x\n"] * 4,
                     ctx=64, mc_items=items, passkey={"lengths": [96], "depths": [0.5], "trials": 2},
                     stress_len=0, progress=False)
    for r in res:
        assert 0 <= r.mc_accuracy <= 1 and r.mc_agree is not None
        assert 0 <= r.mc_accuracy_sum <= 1
        assert set(r.passkey["by_length_depth"]) == {"96@0.5"} and math.isfinite(r.passkey["mean_gain"])
    assert res[1].mc_agree == 1.0


@pytest.mark.parametrize("argv, message", [
    (["--methods", "stock,nosuch"], "unknown inversion method 'nosuch'"),
    (["--corpus", "/nonexistent/file.txt"], "corpus not found"),
    (["--model", "/nonexistent/model"], "model folder not found"),
    (["--mc", "/nonexistent.jsonl"], "multiple-choice file not found"),
    (["--methods", "exact@tf32"], "takes no @precision"),
])
def test_bad_inputs_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["eval", "--quiet", "--no-tasks", *argv])
    assert message in str(e.value)


def test_empty_corpus_and_bad_mc(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n\n")
    with pytest.raises(ValueError, match="empty"):
        load_corpus(str(tmp_path / "empty.txt"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "choices": ["a", "b"], "answer": "c"}) + "\n")
    with pytest.raises(ValueError, match="not one of 2 choices"):
        E.load_mc(bad)


def test_server_client_matches_in_process(model_tok, heldout_ids, tmp_path):
    """Two stand-in servers (SGLang's /generate logprob schema, real model in-process): the client's
    perplexity equals the in-process one, and the report compares the two methods."""
    from sglang_trinv.evals_server import coarse_kl, prompt_logprobs, prompt_logprobs_topk, serve

    model, _ = model_tok
    s1, u1 = serve(MODEL, "stock")
    s2, u2 = serve(MODEL, "blockdoubling")
    try:
        ids = heldout_ids[:120]
        lps, top1 = prompt_logprobs(u1, ids)
        with E.gdn_inversion(E.parse_methods("stock")[0]):
            ref = E.logprobs(model, torch.tensor([ids]))[0]
        assert len(lps) == 119
        assert max(abs(a - float(ref[i, ids[i + 1]])) for i, a in enumerate(lps)) < 1e-5
        assert top1 == ref.argmax(-1).tolist()
        out = tmp_path / "srv"
        rc = cli_main(["eval", "--server-url", f"stock={u1}", "--server-url", f"blockdoubling={u2}",
                       "--max-tokens", "240", "--ctx", "120", "--out", str(out), "--quiet", "--fail-if-worse",
                       "--mc-limit", "6", "--passkey-lengths", "200", "--passkey-depths", "0.5",
                       "--passkey-trials", "2"])
        assert rc == 0
        data = json.loads((out / "report.json").read_text())
        r0, r1 = data["results"]
        # tasks through the servers = the same task code in-process (stock, fp32: identical scores)
        items = E.load_mc(E.DEFAULT_MC)[:6]
        with E.gdn_inversion(E.parse_methods("stock")[0]):
            preds, _, _ = E.mc_predictions(E.model_scorer(model), model_tok[1], items)
        assert r0["mc_accuracy"] == sum(p == it["answer"] for p, it in zip(preds, items)) / 6
        assert r1["mc_agree"] is not None and r0["passkey"]["by_length_depth"].keys() == {"200@0.5"}
        assert data["meta"]["mc"]["items"] == 6 and not data["meta"]["model"].startswith("/")
        assert r0["tokens"] == 238 and r1["top1_agree"] >= 0.99
        assert abs(r1["ppl"] - r0["ppl"]) / r0["ppl"] < 1e-3
        # KL lower bounds (top-20 coarsening) ≤ the in-process KL between the same two methods
        assert 0.0 <= r1["kl_mean"] <= r1["kl_max"] and r1["max_abs_logprob_diff"] >= 0.0
        with E.gdn_inversion(E.parse_methods("blockdoubling")[0]):
            lp_m = E.logprobs(model, torch.tensor([ids]))[0]
        true_kl = (ref.exp() * (ref - lp_m)).sum(-1)  # KL(stock ‖ blockdoubling) per position, first window
        lps_s, tops_s = prompt_logprobs_topk(u1, ids, 20)
        lps_m, tops_m = prompt_logprobs_topk(u2, ids, 20)
        bounds = [coarse_kl(a, b) for a, b in zip(tops_s, tops_m)]
        # (up to the fp32 rounding of the returned log-probs: both methods agree to ~1e-9 here)
        assert all(bd <= float(t) + 1e-6 for bd, t in zip(bounds, true_kl[:-1]))
        assert "lower bounds of KL(stock ‖ method)" in (out / "report.md").read_text()
    finally:
        s1.shutdown()
        s2.shutdown()
    with pytest.raises(SystemExit, match="METHOD=http"):
        cli_main(["eval", "--server-url", "nourl"])


@pytest.mark.gpu
def test_sglang_backend_on_gpu(tmp_path):
    """CUDA: the model's GDN prefill through SGLang's Triton kernels, stock vs our blockdoubling kernel
    (bf16 model): same predictions within bf16 noise, and our kernel really served the calls."""
    pytest.importorskip("sglang.kernels.ops.attention.fla.chunk")
    from sglang_trinv import plugin

    model, tok = E.load_model(MODEL, "cuda")
    docs, _ = load_corpus(None)
    specs = E.parse_methods("stock,blockdoubling", backend="sglang")
    res = E.evaluate(model, tok, specs, docs, ctx=512, max_tokens=2048, backend="sglang", stress_len=0,
                     progress=False)
    assert all(math.isfinite(r.ppl) for r in res)
    assert res[1].hook["calls"] == 3 * 4
    assert res[1].top1_agree >= 0.98 and abs(res[1].ppl_rel_delta) < 0.01
    assert plugin.active().method == "stock"  # unpatched afterwards


def test_coarse_kl_is_a_lower_bound_and_exact_with_full_lists():
    """Server-mode KL: distributions coarsened to the common top-k tokens + rest never exceed the true KL."""
    from sglang_trinv.evals_server import coarse_kl

    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        lp = torch.log_softmax(torch.randn(50, generator=gen, dtype=torch.float64) * 2, -1)
        lq = torch.log_softmax(lp + 0.3 * torch.randn(50, generator=gen, dtype=torch.float64), -1)
        true = float((lp.exp() * (lp - lq)).sum())

        def top(x, k):
            v, i = x.topk(k)
            return {int(a): float(b) for a, b in zip(i, v)}

        for k in (1, 5, 20):
            assert 0.0 <= coarse_kl(top(lp, k), top(lq, k)) <= true + 1e-12
        assert abs(coarse_kl(top(lp, 50), top(lq, 50)) - true) < 1e-9


def test_lm_eval_harness_through_stand_in_servers(model_tok, tmp_path):
    """--lm-eval: EleutherAI's harness (local-completions → /v1/completions with echo + logprobs) against two
    servers; its accuracy on the built-in stdlib_mc task equals ours by summed log-likelihood on the same items."""
    pytest.importorskip("lm_eval")
    pytest.importorskip("tenacity")  # lm_eval[api]
    from sglang_trinv.evals_server import serve

    model, tok = model_tok
    s1, u1 = serve(MODEL, "stock")
    s2, u2 = serve(MODEL, "blockdoubling")
    try:
        out = tmp_path / "lm"
        rc = cli_main(["eval", "--server-url", f"stock={u1}", "--server-url", f"blockdoubling={u2}",
                       "--max-tokens", "120", "--ctx", "120", "--out", str(out), "--quiet", "--no-tasks",
                       "--lm-eval", "stdlib_mc", "--lm-eval-limit", "8"])
    finally:
        s1.shutdown()
        s2.shutdown()
    assert rc == 0
    r0, r1 = json.loads((out / "report.json").read_text())["results"]
    # the same accuracy from the model in-process, with lm-eval's context/continuation split (trailing spaces
    # of the context move to the continuation; continuation = tokens(context + choice) minus tokens(context))
    items = E.load_mc(E.DEFAULT_MC)[:8]
    score = E.model_scorer(model)
    hits = 0
    with E.gdn_inversion(E.parse_methods("stock")[0]):
        for it in items:
            lls = []
            for c in it["choices"]:
                ctx, cont = it["question"], c
                n = len(ctx) - len(ctx.rstrip())
                if n:
                    ctx, cont = ctx[:-n], ctx[-n:] + cont
                whole = tok(ctx + cont, add_special_tokens=False)["input_ids"]
                n_ctx = len(tok(ctx, add_special_tokens=False)["input_ids"])
                lps, _ = score(whole)
                lls.append(sum(lps[n_ctx - 1:]))
            hits += max(range(len(lls)), key=lls.__getitem__) == it["answer"]
    assert r0["lm_eval"]["stdlib_mc"]["acc"] == pytest.approx(hits / 8)
    assert r1["lm_eval"]["stdlib_mc"]["acc"] == pytest.approx(r0["lm_eval"]["stdlib_mc"]["acc"])
    assert "acc_stderr" in r0["lm_eval"]["stdlib_mc"]
    assert "lm-evaluation-harness" in (out / "report.md").read_text()


def test_launch_mode_starts_evaluates_and_stops_each_server(model_tok, tmp_path):
    """`eval --launch`: one server per method started (here the stand-in process with launch_server's flags,
    since SGLang cannot serve on a CPU), evaluated, stopped before the next; the report's stock perplexity is
    the in-process one; a server that dies at start-up is a clear error."""
    out = tmp_path / "launch"
    rc = cli_main(["eval", "--launch", "--launch-module", "sglang_trinv.evals_server", "--model-path", str(MODEL),
                   "--methods", "stock,blockdoubling", "--max-tokens", "240", "--ctx", "120", "--no-tasks",
                   "--no-fail-on-log", "--startup-timeout", "120", "--out", str(out), "--quiet"])
    assert rc == 0
    data = json.loads((out / "report.json").read_text())
    servers = data["meta"]["servers"]
    assert [s["label"] for s in servers] == ["stock", "blockdoubling"] and data["meta"]["launch"]
    assert all("--linear-attn-inv " + s["label"] in s["command"] and s["ready_s"] >= 0 for s in servers)
    assert all(s["exit_code"] is not None for s in servers)  # stopped (process group killed) after its turn
    assert all((out / f"server-{s['label']}.log").is_file() for s in servers)
    r0, r1 = data["results"]
    assert r0["tokens"] == 238 and r1["top1_agree"] >= 0.99 and abs(r1["ppl"] - r0["ppl"]) / r0["ppl"] < 1e-3
    model, tok = model_tok
    windows = E.token_windows(E.token_stream(tok, E.load_corpus(None)[0]), 120, 240)
    nll, n = 0.0, 0
    with E.gdn_inversion(E.parse_methods("stock")[0]):
        for w in windows:
            lp = E.logprobs(model, torch.tensor([w]))[0]
            nll -= float(lp[torch.arange(len(w) - 1), torch.tensor(w[1:])].double().sum())
            n += len(w) - 1
    assert n == r0["tokens"] and abs(r0["ppl"] - math.exp(nll / n)) / r0["ppl"] < 1e-5
    with pytest.raises(SystemExit, match="server stock: server for stock exited early"):
        cli_main(["eval", "--launch", "--launch-module", "no_such_module_xyz", "--model-path", str(MODEL),
                  "--no-tasks", "--max-tokens", "120", "--out", str(tmp_path / "bad"), "--quiet"])
    with pytest.raises(SystemExit, match="drop --server-url"):
        cli_main(["eval", "--launch", "--server-url", "stock=http://127.0.0.1:1", "--out", str(tmp_path / "b2")])

"""``sglang-trinv eval --lm-eval TASKS`` (server mode): EleutherAI lm-evaluation-harness against each server.

lm-eval's ``local-completions`` model talks to the server's OpenAI ``/v1/completions`` (SGLang serves it),
scoring multiple-choice tasks by log-likelihood (``echo`` + ``logprobs``), with the served model's
HuggingFace tokenizer. ``lm_eval`` is an optional extra (``pip install "sglang-trinv[lm-eval]"``); the tasks'
datasets are the user's (lm-eval's own registry and cache). ``stdlib_mc`` is built in: the shipped
multiple-choice JSONL as an lm-eval task (written to a temporary include folder, the data file by absolute
path), so the harness path can be checked offline.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

BUILTIN = "stdlib_mc"
_STDLIB_MC_YAML = """task: stdlib_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def require_lm_eval():
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise SystemExit("sglang-trinv eval --lm-eval needs EleutherAI's lm-evaluation-harness: "
                         'pip install "sglang-trinv[lm-eval]" (or pip install lm_eval)') from None


def run_tasks(url: str, tokenizer: str, tasks: list[str], mc_file: Path, limit: int | None = None,
              include: str | None = None) -> dict[str, dict[str, float]]:
    """lm-eval ``local-completions`` on one server → ``{task: {metric: value, metric + "_stderr": se}}``."""
    require_lm_eval()
    import lm_eval
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory(prefix="sglang-trinv-lmeval-") as tmp:
        paths = [tmp] + ([include] if include else [])
        (Path(tmp) / f"{BUILTIN}.yaml").write_text(_STDLIB_MC_YAML.format(data=Path(mc_file).resolve()))
        out = lm_eval.simple_evaluate(
            model="local-completions",
            model_args={"base_url": f"{url}/v1/completions", "model": Path(tokenizer).name, "tokenizer": tokenizer,
                        "tokenizer_backend": "huggingface", "tokenized_requests": True, "num_concurrent": 1,
                        "max_retries": 2},
            tasks=tasks, task_manager=TaskManager(include_path=paths), limit=limit, log_samples=False,
        )
    res = {}
    for task, metrics in out["results"].items():
        vals = {}
        for key, v in metrics.items():
            name, _, _filter = key.partition(",")
            if isinstance(v, (int, float)) and not isinstance(v, bool) and name not in ("alias", "sample_len"):
                vals[name] = float(v) if math.isfinite(float(v)) else float("nan")
        res[task] = vals
    return res


def markdown(results) -> list[str]:
    """Per task/metric: each method's value ± 95% CI (1.96·stderr) and Δ vs the first method."""
    tasks = [r.lm_eval for r in results if r.lm_eval]
    if not tasks:
        return []
    L = ["## lm-evaluation-harness (through each server)", "",
         "| task | metric | " + " | ".join(f"`{r.label}`" for r in results) + " |",
         "|---|---|" + "---|" * len(results)]
    base = results[0].lm_eval
    for task in base:
        for metric in sorted(m for m in base[task] if not m.endswith("_stderr")):
            cells = []
            for r in results:
                v = r.lm_eval.get(task, {}).get(metric, float("nan"))
                se = r.lm_eval.get(task, {}).get(f"{metric}_stderr", float("nan"))
                d = v - base[task][metric]
                ci = f" ± {1.96 * se:.3f}" if math.isfinite(se) else ""
                cells.append(f"{v:.3f}{ci}" + ("" if r is results[0] else f" (Δ {d:+.3f})"))
            L.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
    return L + [""]

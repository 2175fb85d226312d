"""``sglang-trinv stability``: how accurately every method inverts ``I + A`` in every emulated precision.

For each method × precision × matrix family × size n, a batch of fp32 matrices ``A`` (built as a delta-rule
layer builds them, see :mod:`sglang_trinv.reference.families`) is inverted by the method's reference twin and
compared with the fp64 triangular solve ``X* = exact_inverse(A)`` of the same fp32 ``A`` (so the numbers are
the inversion's error only, not the error of forming A). Per matrix, with ``X`` the computed inverse in fp64:

- ``max_abs  = max_ij |X − X*|``
- ``max_rel  = max_ij |X − X*| / max_ij |X*|``   (normwise-relative in the max norm: robust to tiny entries)
- ``fro_rel  = ‖X − X*‖_F / ‖X*‖_F``
- ``backward = ‖I − M X‖_F`` with ``M = I + A`` in fp64 (the residual: how well X inverts the M it was given)

and the batch reports the worst (max) over its matrices; a matrix with any non-finite entry counts in
``nonfinite`` and makes the metrics ``inf`` (``null`` in the JSON). Outputs: a markdown report, a JSON file
(with versions, date, device) and a PNG (max_rel vs n, one panel per family).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import torch

from .presets import load_config
from .reference.families import family_specs, make_family
from .reference.inverse import exact_inverse
from .reference.precision import PRECISIONS
from .registry import METHOD_NAMES, check_precision, get_method

METRICS = ("max_abs", "max_rel", "fro_rel", "backward")
DEFAULT_OUT = "evals/results/stability"


# ------------------------------------------------------------------------------------------------- metrics
def error_metrics(A: torch.Tensor, X: torch.Tensor) -> dict[str, Any]:
    """Worst-case error metrics of the computed inverses ``X [batch, n, n]`` of ``I + A`` (see module doc)."""
    A64 = torch.tril(A.to(torch.float64), -1)
    X64 = X.to(torch.float64)
    ref = exact_inverse(A64)
    n = A.shape[-1]
    eye = torch.eye(n, dtype=torch.float64, device=A.device)
    finite = torch.isfinite(X64).flatten(1).all(dim=1)                         # [batch]
    err = X64 - ref
    per = {
        "max_abs": err.abs().amax(dim=(-2, -1)),
        "max_rel": err.abs().amax(dim=(-2, -1)) / ref.abs().amax(dim=(-2, -1)),
        "fro_rel": torch.linalg.matrix_norm(err) / torch.linalg.matrix_norm(ref),
        "backward": torch.linalg.matrix_norm(eye - (eye + A64) @ X64),
    }
    out: dict[str, Any] = {}
    for name, values in per.items():
        values = torch.where(finite, values, torch.full_like(values, math.inf))
        out[name] = float(values.max())
    out["nonfinite"] = int((~finite).sum())
    out["batch"] = int(A.shape[0])
    out["ref_max"] = float(ref.abs().amax())           # growth of the true inverse
    return out


# --------------------------------------------------------------------------------------------------- sweep
def default_sweep() -> dict[str, Any]:
    """The ``default_sweep`` block of ``configs/families.yaml``."""
    return load_config("families")["default_sweep"]


def validate(methods: Iterable[str], precisions: Iterable[str], families: Iterable[str],
             sizes: Iterable[int], presets: Iterable[str] = ()) -> None:
    """Raise ``ValueError`` naming the valid choices for an unknown method / precision / family / size /
    preset."""
    for m in methods:
        get_method(m)
    known_presets = load_config("methods")["presets"]
    for p in presets:
        if p not in known_presets:
            raise ValueError(f"unknown method preset {p!r}; choose from: {', '.join(known_presets)}")
    for p in precisions:
        check_precision(p)
    known = family_specs()
    for f in families:
        if f not in known:
            raise ValueError(f"unknown matrix family {f!r}; choose from: {', '.join(known)}")
    for n in sizes:
        if n < 1:
            raise ValueError(f"matrix size must be >= 1, got {n}")


def run_sweep(methods: list[str], precisions: list[str], families: list[str], sizes: list[int],
              batch: int = 8, seed: int = 0, device: str = "cpu", progress: bool = True,
              presets: list[str] = ()) -> list[dict[str, Any]]:
    """Every method × precision × family × n, plus every method preset of ``configs/methods.yaml`` in
    ``presets`` (its own precision, block size and inner method; reported with method = preset name)."""
    validate(methods, precisions, families, sizes, presets)
    from tqdm import tqdm

    from .presets import method_preset, preset_inverter

    specs = family_specs()
    runs = [(method, precision, (lambda A, m=get_method(method), p=precision: m.invert(A, p)))
            for method in methods for precision in precisions]
    runs += [(name, method_preset(name)["precision"], preset_inverter(name)) for name in presets]
    rows = []
    total = len(families) * len(sizes) * len(runs)
    with tqdm(total=total, disable=not progress, file=sys.stderr, desc="stability", unit="run") as bar:
        for family in families:
            for n in sizes:
                A = make_family(family, n, batch, seed, specs[family]).A.to(device)
                for method, precision, invert in runs:
                    t0 = time.perf_counter()
                    with torch.no_grad():
                        X = invert(A)
                    seconds = time.perf_counter() - t0
                    rows.append({"family": family, "n": n, "method": method, "precision": precision,
                                 **error_metrics(A, X), "seconds": seconds})
                    bar.update()
    return rows


# ------------------------------------------------------------------------------------------------- reports
def _fmt(x: float) -> str:
    return "inf" if not math.isfinite(x) else ("0" if x == 0 else f"{x:.1e}")


def _cell(row: dict[str, Any], metric: str = "max_rel") -> str:
    s = _fmt(row[metric])
    if row["nonfinite"]:
        s += f" ({row['nonfinite']}/{row['batch']} non-finite)"
    return s


def headline_size(sizes: list[int]) -> int:
    """The size the summary table shows: 64 (the production chunk) if swept, else the largest."""
    return 64 if 64 in sizes else max(sizes)


def summary_table(rows: list[dict[str, Any]], metric: str = "max_rel") -> str:
    """Markdown: rows = method / precision, columns = families, at :func:`headline_size`."""
    sizes = sorted({r["n"] for r in rows})
    n = headline_size(sizes)
    families = list(dict.fromkeys(r["family"] for r in rows))
    combos = list(dict.fromkeys((r["method"], r["precision"]) for r in rows))
    index = {(r["family"], r["n"], r["method"], r["precision"]): r for r in rows}
    lines = [f"{metric} at n = {n} (worst of the batch)", "",
             "| method | precision | " + " | ".join(families) + " |",
             "|---|---|" + "---|" * len(families)]
    for method, precision in combos:
        cells = [_cell(index[(f, n, method, precision)], metric) for f in families]
        lines.append(f"| {method} | {precision} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_table(rows: list[dict[str, Any]], baseline: str = "forward_substitution",
                metric: str = "max_rel") -> str:
    """Markdown: each method's ``metric`` divided by ``baseline``'s at the same precision and family, at
    :func:`headline_size`; median and worst over the families (families where the baseline is exact are
    skipped). Only at one size: at n ≤ 16 forward substitution does no tensor-core products at all."""
    n = headline_size(sorted({r["n"] for r in rows}))
    index = {(r["family"], r["n"], r["method"], r["precision"]): r for r in rows}
    if not any(r["method"] == baseline for r in rows):
        return ""
    ratios: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        base = index.get((r["family"], n, baseline, r["precision"]))
        if r["n"] != n or base is None or r["method"] == baseline or not base[metric] \
                or not math.isfinite(base[metric]):
            continue
        ratios.setdefault((r["method"], r["precision"]), []).append(r[metric] / base[metric])
    lines = [f"{metric} / {baseline}'s {metric} at n = {n} (same precision and family): median and worst "
             "over the families", "", "| method | precision | median | worst |", "|---|---|---|---|"]
    for (method, precision), vals in ratios.items():
        vals = sorted(vals)
        lines.append(f"| {method} | {precision} | {_fmt(vals[len(vals) // 2])} | {_fmt(vals[-1])} |")
    return "\n".join(lines)


def detail_tables(rows: list[dict[str, Any]]) -> str:
    """Markdown: per family, every method / precision / n with all metrics."""
    out = []
    for family in dict.fromkeys(r["family"] for r in rows):
        out += [f"### {family}", "",
                "| method | precision | n | max_abs | max_rel | fro_rel | backward | non-finite | max abs(X*) |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["family"] == family):
            out.append(f"| {r['method']} | {r['precision']} | {r['n']} | " +
                       " | ".join(_fmt(r[m]) for m in METRICS) +
                       f" | {r['nonfinite']}/{r['batch']} | {r['ref_max']:.3g} |")
        out.append("")
    return "\n".join(out)


def environment(device: str) -> dict[str, Any]:
    """Versions, date and device recorded with every report."""
    import numpy

    from . import __version__

    info = {"sglang_trinv": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(torch.device(device))
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info


def _json_safe(x: Any) -> Any:
    """inf/nan -> None so the file is strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def write_json(path: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    doc = {"meta": meta, "definitions": {
        "max_abs": "max_ij |X - X*|",
        "max_rel": "max_ij |X - X*| / max_ij |X*|",
        "fro_rel": "||X - X*||_F / ||X*||_F",
        "backward": "||I - (I + A) X||_F in fp64",
        "reduction": "worst (max) over the batch; null = some output non-finite (see nonfinite)",
        "reference": "X* = fp64 triangular solve of the same fp32 A"}, "results": rows}
    doc = _json_safe(doc)
    results = doc.pop("results")
    head = json.dumps(doc, indent=1, allow_nan=False)[:-2]           # one result per line: small, diffable
    body = ",\n  ".join(json.dumps(r, allow_nan=False) for r in results)
    path.write_text(f'{head},\n "results": [\n  {body}\n ]\n}}\n')


def plot(path: Path, rows: list[dict[str, Any]], metric: str = "max_rel", floor: float = 1e-10,
         ceiling: float = 1e6) -> None:
    """``metric`` vs n (log-log), one panel per family; colour = method, line style = precision.

    The y axis spans [floor, ceiling] so the stable methods stay readable: exact results (0) sit on the
    floor (▼), finite errors above the ceiling on it (▲), non-finite results on a red band above it (✕).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    families = list(dict.fromkeys(r["family"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    precisions = list(dict.fromkeys(r["precision"] for r in rows))
    cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    colors = {m: cmap(i % cmap.N) for i, m in enumerate(methods)}
    styles = ["-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1))]
    linestyle = {p: styles[i % len(styles)] for i, p in enumerate(precisions)}
    band = ceiling * 30

    ncols = min(4, len(families))
    nrows = math.ceil(len(families) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows + 0.8), squeeze=False,
                             sharey=True)
    for ax, family in zip(axes.flat, families):
        for method in methods:
            for precision in precisions:
                sel = sorted((r for r in rows if r["family"] == family and r["method"] == method
                              and r["precision"] == precision), key=lambda r: r["n"])
                if not sel:
                    continue
                ns = [r["n"] for r in sel]
                vals = [r[metric] for r in sel]
                ys = [min(max(v, floor), ceiling) if math.isfinite(v) else math.nan for v in vals]
                ax.plot(ns, ys, color=colors[method], linestyle=linestyle[precision], lw=1.2, alpha=0.85)
                for n, v in zip(ns, vals):
                    if not math.isfinite(v):
                        ax.scatter([n], [band], marker="x", color=colors[method], s=36, zorder=3)
                    elif v > ceiling:
                        ax.scatter([n], [ceiling], marker="^", color=colors[method], s=22, zorder=3)
                    elif v < floor:
                        ax.scatter([n], [floor], marker="v", color=colors[method], s=22, zorder=3)
        ax.axhline(band, color="red", lw=0.6, alpha=0.5)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_ylim(floor / 3, band * 10)
        ax.set_xticks(sorted({r["n"] for r in rows}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_title(family, fontsize=10)
        ax.set_xlabel("n")
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes.flat[len(families):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel(metric)
    handles = [Line2D([], [], color=colors[m], lw=2, label=m) for m in methods]
    handles += [Line2D([], [], color="gray", linestyle=linestyle[p], label=p) for p in precisions]
    handles += [Line2D([], [], color="gray", marker=mk, linestyle="none", label=lab) for mk, lab in
                [("x", "non-finite"), ("^", f"> {ceiling:.0e}"), ("v", f"< {floor:.0e} (0 = exact)")]]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=8, frameon=False)
    fig.suptitle(f"(I + A)^-1 error vs fp64 solve: {metric}, worst of batch", fontsize=11)
    legend_rows = math.ceil(len(handles) / 7)
    fig.tight_layout(rect=(0, 0.035 * legend_rows * 3 / nrows, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def families_list(families: list[str]) -> list[str]:
    """Markdown bullets: each family's description from ``configs/families.yaml``."""
    specs = family_specs()
    return [f"- **{f}**: {specs[f].get('description', '')}" for f in families]


def markdown_report(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    env = meta["environment"]
    head = [
        "# Stability of (I + A)^-1 methods", "",
        f"- date: {env['date']}; device: {env['device']} ({env['device_name']}); torch {env['torch']}; "
        f"sglang-trinv {env['sglang_trinv']}",
        f"- command: `{meta['command']}`",
        f"- batch {meta['batch']} matrices per (family, n); seed {meta['seed']}; sweep time {meta['seconds']:.1f} s",
        "- error of X vs X* = fp64 solve of the same fp32 A; worst of the batch. max_rel = max|X − X*| / max|X*|, "
        "fro_rel = ‖X − X*‖_F / ‖X*‖_F, backward = ‖I − (I + A)X‖_F (fp64). "
        "`inf (k/b non-finite)`: k of b outputs had inf/nan.", "",
        "## Families", "", *families_list(meta["families"]), "",
        "## Summary", "", summary_table(rows), "", ratio_table(rows), "",
        "## All results", "", detail_tables(rows)]
    return "\n".join(head)


# ----------------------------------------------------------------------------------------------------- CLI
def _csv(text: str) -> list[str]:
    return [t for t in text.replace(",", " ").split() if t]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = default_sweep()
    parser.add_argument("--methods", type=_csv, default=d["methods"],
                        help=f"comma-separated (default: {','.join(d['methods'])}; known: {','.join(METHOD_NAMES)})")
    parser.add_argument("--precisions", type=_csv, default=d["precisions"],
                        help=f"comma-separated (default: {','.join(d['precisions'])}; known: {','.join(PRECISIONS)})")
    parser.add_argument("--families", type=_csv, default=d["families"],
                        help="comma-separated families of configs/families.yaml (default: all of default_sweep)")
    parser.add_argument("--presets", type=_csv, default=d.get("presets", []),
                        help="comma-separated method presets of configs/methods.yaml to add (default: "
                             f"{','.join(d.get('presets', [])) or 'none'}; 'none' for none)")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in _csv(s)], default=d["sizes"],
                        help=f"comma-separated matrix sizes n (default: {','.join(map(str, d['sizes']))})")
    parser.add_argument("--batch", type=int, default=d["batch"], help="matrices per (family, n)")
    parser.add_argument("--seed", type=int, default=d["seed"])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.presets == ["none"]:
        args.presets = []
    try:
        validate(args.methods, args.precisions, args.families, args.sizes, args.presets)
        if args.batch < 1:
            raise ValueError(f"--batch must be >= 1, got {args.batch}")
        if args.device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise ValueError("--device cuda requested but no CUDA device is available")
            # plain fp32 products must stay fp32: the precision emulation does its own rounding
            torch.backends.cuda.matmul.allow_tf32 = False
    except ValueError as e:
        print(f"sglang-trinv stability: error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    if args.device == "cpu":
        # matrices of n <= 128: intra-op threads only add contention on a shared CPU (2x slower when busy)
        torch.set_num_threads(1)
    try:
        rows = run_sweep(args.methods, args.precisions, args.families, args.sizes, args.batch, args.seed,
                         args.device, progress=not args.quiet, presets=args.presets)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - t0
    meta = {"environment": environment(args.device), "command": "sglang-trinv stability " + " ".join(
                [f"--methods {','.join(args.methods)}", f"--precisions {','.join(args.precisions)}",
                 f"--families {','.join(args.families)}", f"--presets {','.join(args.presets) or 'none'}", f"--sizes {','.join(map(str, args.sizes))}",
                 f"--batch {args.batch}", f"--seed {args.seed}", f"--device {args.device}"]),
            "methods": args.methods, "precisions": args.precisions, "presets": args.presets, "families": args.families,
            "sizes": args.sizes, "batch": args.batch, "seed": args.seed, "seconds": round(seconds, 2)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stability.md").write_text(markdown_report(rows, meta) + "\n")
    write_json(out / "stability.json", rows, meta)
    if not args.no_plot:
        plot(out / "stability.png", rows)
    print(summary_table(rows))
    print(f"\n{len(rows)} runs in {seconds:.1f} s; wrote {out}/stability.md, stability.json"
          + ("" if args.no_plot else ", stability.png"))
    return 0

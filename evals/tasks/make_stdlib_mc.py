#!/usr/bin/env python
"""Write ``stdlib_mc.jsonl``: next-line multiple choice built from the held-out stdlib files.

Why: an offline task the shipped tiny model can score above chance (it completes stdlib-style code), so
``sglang-trinv eval`` can compare methods on task accuracy, not only perplexity. Each item: 12 lines of a
held-out file; choices: the true next line + 3 lines from other held-out files.

    python evals/tasks/make_stdlib_mc.py [--n 60] [--out evals/tasks/stdlib_mc.jsonl]
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from sglang_trinv.evals import make_mc_items  # noqa: E402
from sglang_trinv.evals_data import load_corpus  # noqa: E402

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--n", type=int, default=60)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--out", default=str(Path(__file__).with_name("stdlib_mc.jsonl")))
a = p.parse_args()
docs, label = load_corpus(None)
items = make_mc_items(docs, a.n, seed=a.seed)
with open(a.out, "w") as f:
    for it in items:
        f.write(json.dumps(it) + "\n")
print(f"{len(items)} items from {label} -> {a.out}")

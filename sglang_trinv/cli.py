"""``sglang-trinv`` command line: one subcommand per job, each in its own module.

A subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only
when their subcommand runs, so ``sglang-trinv stability`` never imports Triton or SGLang.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    # name: (module, one-line help)
    "stability": ("sglang_trinv.stability", "numerical-stability analysis of every method (CPU or GPU)"),
    "bench": ("sglang_trinv.bench", "A/B benchmark of our kernels vs SGLang's stock kernel (GPU)"),
    "eval": ("sglang_trinv.evals", "end-to-end perplexity/KL/task accuracy of each method vs stock on a model"),
    "methods": ("sglang_trinv.cli", "list the inversion methods and precisions"),
    "check": ("sglang_trinv.plugin.doctor", "what the plugin will do with this SGLang/GPU (before starting a server)"),
}


def _methods_add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _methods_run(args: argparse.Namespace) -> int:
    from .ops import DEFAULT_PRECISION, INVERSE_ONLY_PRECISION, SOLVE_TRIL_PRECISION
    from .reference.precision import PRECISIONS
    from .registry import METHODS

    print("| method | stable | kernel precision: fused intra / KKᵀ + inverse / solve_tril | reference (stability) | math | "
          "cost |")
    print("|---|---|---|---|---|---|")
    for m in METHODS.values():
        kernel = " / ".join(d.get(m.name, "–") for d in (DEFAULT_PRECISION, INVERSE_ONLY_PRECISION, SOLVE_TRIL_PRECISION))
        print(f"| {m.name} | {'yes' if m.stable else 'NO'} | {kernel} | {m.default_precision} | {m.math} | {m.cost} |")
    print(f"\nprecisions: {', '.join(PRECISIONS)}")
    return 0


def _load(name: str):
    module_name = SUBCOMMANDS[name][0]
    if name == "methods":
        return _methods_add_arguments, _methods_run
    mod = importlib.import_module(module_name)
    return mod.add_arguments, mod.run


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="sglang-trinv", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    # parse only the subcommand name first, then build its full parser (lazy imports)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        args = parser.parse_args(argv)
        parser.print_help()
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    name = argv[0]
    add_arguments, run = _load(name)
    sub_parser = argparse.ArgumentParser(prog=f"sglang-trinv {name}", description=SUBCOMMANDS[name][1])
    add_arguments(sub_parser)
    return int(run(sub_parser.parse_args(argv[1:])) or 0)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Train the tiny Qwen3-Next checkpoint shipped in ``evals/models/`` on CPython's stdlib sources (CPU).

Why: end-to-end evals (perplexity, KL vs stock, tasks) need a real hybrid GDN + full-attention model whose
Gated DeltaNet layers produce learned (not random) ``(I + A)`` matrices, small enough to commit and to run on
any CPU. Transformers' torch fallback of the chunked gated delta rule trains it; SGLang can serve it.

Steps: byte-level BPE tokenizer (``tokenizers``) on the training files → ``Qwen3NextForCausalLM`` (3 GDN
layers + 1 full-attention layer, tiny MoE) → AdamW on random windows of the token stream, time-boxed →
held-out perplexity → ``save_pretrained`` (bf16 when fp32 would not fit the size budget) + loss curve
(CSV, PNG) + model card.

    python evals/train_tiny_model.py --out evals/models/qwen3-next-tiny-stdlib --minutes 16
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sglang_trinv.evals_data import (HELDOUT_FILES, python_version, read_texts, stdlib_dir,  # noqa: E402
                                     stdlib_split, token_stream, token_windows)

EOS = "<|endoftext|>"



def _portable(path) -> str:
    """The stdlib folder without this machine's install prefix (no machine paths in committed files)."""
    import sys

    try:
        return f"<python {sys.version.split()[0]} prefix>/{Path(path).relative_to(sys.base_prefix)}"
    except ValueError:
        return Path(path).name

def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE (GPT-2 style pre-tokenizer, no prefix space) wrapped for transformers/SGLang."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS,
                                   unk_token=None, model_max_length=4096, clean_up_tokenization_spaces=False)


def make_config(vocab_size: int, eos_id: int, args):
    from transformers import Qwen3NextConfig

    # full_attention_interval=4 over 4 layers: layers 0–2 Gated DeltaNet, layer 3 full attention (both
    # transformers' layer_types and SGLang's layers_block_type derive the same pattern from it).
    return Qwen3NextConfig(
        vocab_size=vocab_size, hidden_size=args.hidden, num_hidden_layers=4, full_attention_interval=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64, partial_rotary_factor=0.25,
        linear_key_head_dim=64, linear_value_head_dim=64, linear_num_key_heads=2, linear_num_value_heads=4,
        linear_conv_kernel_dim=4,
        # SGLang's Qwen3-Next makes every layer sparse: a tiny MoE (4 experts, top-2) + shared expert
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=128, shared_expert_intermediate_size=256,
        intermediate_size=512, decoder_sparse_step=1, norm_topk_prob=True,
        max_position_embeddings=4096, rope_theta=10000.0, tie_word_embeddings=False,
        bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id,
    )


@torch.no_grad()
def mean_nll(model, windows: list[list[int]]) -> float:
    """Mean next-token NLL (nats) over all scored tokens of the windows (fp32 forward, exact solve)."""
    model.eval()
    tot, n = 0.0, 0
    for w in windows:
        x = torch.tensor([w])
        logits = model(input_ids=x).logits[0, :-1].float()
        tot += torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum").item()
        n += len(w) - 1
    model.train()
    return tot / n


def plot_curve(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    tk = [r["tokens"] / 1e6 for r in rows]
    ax.plot(tk, [r["train_loss"] for r in rows], lw=0.8, alpha=0.6, label="train (batch)")
    ev = [r for r in rows if r["heldout_loss"] != ""]
    ax.plot([r["tokens"] / 1e6 for r in ev], [r["heldout_loss"] for r in ev], "o-", ms=3, label="held-out sample")
    ax.set_xlabel("training tokens (M)")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="evals/models/qwen3-next-tiny-stdlib")
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--seq", type=int, default=256, help="training window (tokens); 4 chunks of 64")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--minutes", type=float, default=16.0, help="wall-clock budget for the training loop")
    p.add_argument("--max-steps", type=int, default=100000)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-ctx", type=int, default=512, help="window for the final held-out perplexity")
    p.add_argument("--max-bytes", type=int, default=16 * 2**20, help="size budget of the saved folder")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--card-only", action="store_true", help="rewrite README.md from training_meta.json, no training")
    args = p.parse_args(argv)
    if args.card_only:
        from transformers import AutoConfig

        out = Path(args.out)
        write_card(out, AutoConfig.from_pretrained(out), json.loads((out / "training_meta.json").read_text()))
        return 0

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import Qwen3NextForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    train_files, held_files = stdlib_split()
    train_docs, held_docs = read_texts(train_files), read_texts(held_files)
    tok = train_tokenizer(train_docs, args.vocab)
    train_ids = torch.tensor(token_stream(tok, train_docs))
    held_ids = token_stream(tok, held_docs)
    print(f"corpus: {len(train_files)} train files ({sum(map(len, train_docs)) / 1e6:.2f} MB, "
          f"{len(train_ids)} tokens), {len(held_files)} held-out ({len(held_ids)} tokens); "
          f"tokenizer {time.time() - t0:.0f}s", flush=True)

    config = make_config(len(tok), tok.eos_token_id, args)
    model = Qwen3NextForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f} M params, layer types {config.layer_types}", flush=True)

    decay, no_decay = [], []
    for name, prm in model.named_parameters():
        (no_decay if prm.dim() < 2 or "norm" in name or name.endswith(("A_log", "dt_bias")) else decay).append(prm)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    budget = args.minutes * 60
    warmup = 30
    sample_windows = token_windows(held_ids, args.seq)[::8][:12]  # fixed held-out sample for the curve
    rows: list[dict] = []
    tokens = 0
    t_train = time.time()
    step = 0
    while step < args.max_steps:
        elapsed = time.time() - t_train
        if elapsed > budget:
            break
        # lr: linear warmup, then cosine over the time budget (the step count is not known in advance)
        frac = min(1.0, elapsed / budget)
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, len(train_ids) - args.seq - 1, (args.batch,))
        x = torch.stack([train_ids[s:s + args.seq] for s in starts.tolist()])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += x.numel()
        row = {"step": step, "tokens": tokens, "seconds": round(time.time() - t_train, 1), "lr": lr,
               "train_loss": round(loss.item(), 4), "heldout_loss": ""}
        if step % args.eval_every == 0:
            row["heldout_loss"] = round(mean_nll(model, sample_windows), 4)
            print(f"step {step} tok {tokens / 1e6:.2f}M {row['seconds']:.0f}s lr {lr:.2e} "
                  f"train {row['train_loss']:.3f} held-out {row['heldout_loss']:.3f}", flush=True)
        rows.append(row)
    if rows and rows[-1]["heldout_loss"] == "":
        rows[-1]["heldout_loss"] = round(mean_nll(model, sample_windows), 4)
    train_seconds = time.time() - t_train

    # save: fp32 if the folder fits the budget, else bf16 (weights rounded once, evaluated as saved)
    fp32_bytes = n_params * 4
    dtype = torch.float32 if fp32_bytes < args.max_bytes - 1_000_000 else torch.bfloat16
    model = model.to(dtype)
    model.config.torch_dtype = dtype  # noqa: the key SGLang/transformers read for the checkpoint dtype
    model.save_pretrained(out)
    tok.save_pretrained(out)
    # transformers 5 writes layer_types/rope_parameters only; SGLang's Qwen3NextConfig derives its layer
    # pattern from full_attention_interval and reads rope_theta: keep both keys in config.json.
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.setdefault("full_attention_interval", 4)
    cfg.setdefault("rope_theta", 10000.0)
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    # held-out perplexity of the model exactly as saved (reloaded, fp32 compute)
    reloaded = Qwen3NextForCausalLM.from_pretrained(out, dtype=torch.float32)
    held_windows = token_windows(held_ids, args.eval_ctx)
    nll = mean_nll(reloaded, held_windows)
    folder_bytes = sum(f.stat().st_size for f in out.iterdir() if f.is_file())

    with open(out / "loss_curve.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot_curve(rows, out / "loss_curve.png", f"{out.name}: {n_params / 1e6:.2f} M params, {step} steps")
    meta = {
        "python": python_version(), "stdlib_dir": _portable(stdlib_dir()), "torch": torch.__version__,
        "train_files": len(train_files), "train_tokens_in_corpus": len(train_ids),
        "heldout_files": list(HELDOUT_FILES), "heldout_tokens": len(held_ids),
        "params": n_params, "dtype": str(dtype).replace("torch.", ""), "vocab": len(tok),
        "steps": step, "tokens_seen": tokens, "train_seconds": round(train_seconds), "seq": args.seq,
        "batch": args.batch, "lr": args.lr, "seed": args.seed, "threads": args.threads,
        "final_train_loss": rows[-1]["train_loss"], "heldout_ctx": args.eval_ctx,
        "heldout_nll": round(nll, 4), "heldout_ppl": round(math.exp(nll), 3),
        "heldout_bits_per_byte": round(nll * len(held_ids) / math.log(2) / sum(len(d.encode()) for d in held_docs), 4),
        "folder_bytes": folder_bytes,
    }
    (out / "training_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    write_card(out, config, meta)
    print(json.dumps(meta, indent=2))
    if folder_bytes > args.max_bytes:
        print(f"WARNING: {out} is {folder_bytes / 2**20:.1f} MiB > budget {args.max_bytes / 2**20:.1f} MiB")
        return 1
    return 0


def write_card(out: Path, config, m: dict) -> None:
    c = config
    text = f"""# {out.name}

A tiny **Qwen3-Next-architecture** causal LM (transformers `Qwen3NextForCausalLM`, HF safetensors) trained
on CPU on CPython's own standard-library sources, shipped so that end-to-end evals of the `(I + A)^{{-1}}`
methods (`sglang-trinv eval`) run on any machine, offline. It is a test article, not a useful model: it
completes Python-stdlib-style code.

| | |
|---|---|
| layers | {c.num_hidden_layers}: {', '.join(c.layer_types)} |
| hidden | {c.hidden_size} |
| Gated DeltaNet | {c.linear_num_key_heads} key heads × {c.linear_key_head_dim}, {c.linear_num_value_heads} value heads × {c.linear_value_head_dim} (GQA 2:1), conv {c.linear_conv_kernel_dim}, chunk 64 |
| full attention | {c.num_attention_heads} q heads / {c.num_key_value_heads} kv heads × {c.head_dim}, partial RoPE {c.partial_rotary_factor} |
| MLP | MoE {c.num_experts} experts top-{c.num_experts_per_tok} (intermediate {c.moe_intermediate_size}) + shared expert ({c.shared_expert_intermediate_size}) in every layer (SGLang's Qwen3-Next layout) |
| vocab | {m['vocab']} byte-level BPE (`tokenizers`, trained on the training files), EOS `{EOS}` |
| parameters | {m['params']:,} ({m['params'] / 1e6:.2f} M) |
| weights | {m['dtype']} safetensors; folder {m['folder_bytes'] / 2**20:.2f} MiB |

## Data

Top-level `Lib/*.py` of Python {m['python']} (`{m['stdlib_dir']}`): {m['train_files']} training files
({m['train_tokens_in_corpus']:,} tokens, each file followed by EOS). **Held out** (never seen by the tokenizer
or the model; the default corpus of `sglang-trinv eval`): {', '.join(f'`{f}`' for f in m['heldout_files'])}
({m['heldout_tokens']:,} tokens). Other Python versions have different file contents, so retraining there
gives a different (comparable, not identical) model.

## Training

`python evals/train_tiny_model.py --out {out.as_posix()}` — AdamW (β 0.9/0.95, wd 0.1), lr {m['lr']} with
30-step warmup and cosine decay over a wall-clock budget, batch {m['batch']} × {m['seq']} tokens (random
windows), grad clip 1, seed {m['seed']}, {m['threads']} CPU thread(s), fp32; transformers' torch fallback of
the chunked gated delta rule (exact triangular solve). {m['steps']} steps, {m['tokens_seen'] / 1e6:.2f} M
tokens, {m['train_seconds'] / 60:.1f} min, torch {m['torch']}.

![loss curve](loss_curve.png)

Loss per step: [`loss_curve.csv`](loss_curve.csv) (train loss of the batch; held-out loss on a fixed
12-window sample every 50 steps). Final train loss {m['final_train_loss']}.

## Held-out perplexity

Checkpoint as saved ({m['dtype']}), fp32 compute on CPU, exact solve, non-overlapping windows of
{m['heldout_ctx']} tokens (8 GDN chunks each), tokens 1…511 of each window scored:
**{m['heldout_ppl']} per token** (NLL {m['heldout_nll']} nats, {m['heldout_bits_per_byte']} bits/byte).
`sglang-trinv eval` measures the same protocol with every inversion method: see `evals/results/`.

## Loading

- transformers: `AutoModelForCausalLM.from_pretrained("{out.as_posix()}")` (CPU: the torch fallbacks of the
  gated delta rule and the causal conv are used; `sglang-trinv eval` swaps the former per method).
- SGLang: `config.json` also carries `full_attention_interval` and `rope_theta`, from which SGLang's
  `Qwen3NextConfig` derives layers `[linear, linear, linear, attention]`; weights use the per-expert names
  (`mlp.experts.N.{{gate,up,down}}_proj`) its loader expects. Checked: SGLang's config class parses it.
  Not yet checked: serving it on a GPU (`python -m sglang.launch_server --model-path {out.as_posix()}`).
"""
    (out / "README.md").write_text(text)


if __name__ == "__main__":
    sys.exit(main())

"""End to end on a GPU: a real SGLang server with --linear-attn-inv serves a (tiny, dummy-weight) GDN model.

Proves, from the server's own log, that the flag reached the spawned scheduler, that the scheduler patched
SGLang's GDN Triton prefill and that prefill requests ran through our kernel. Skipped without CUDA.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.gpu
pytest.importorskip("sglang.launch_server")

# Qwen3-Next layout, scaled down; linear head dims 128 so SGLang's SM90/SM100 FlashInfer prefill default applies
TINY_QWEN3_NEXT = {
    "architectures": ["Qwen3NextForCausalLM"], "model_type": "qwen3_next", "torch_dtype": "bfloat16",
    "vocab_size": 2048, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4,
    "layer_types": ["linear_attention"] * 3 + ["full_attention"], "full_attention_interval": 4,
    "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 64,
    "linear_conv_kernel_dim": 4, "linear_key_head_dim": 128, "linear_value_head_dim": 128,
    "linear_num_key_heads": 2, "linear_num_value_heads": 4,
    "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 128,
    "shared_expert_intermediate_size": 128, "decoder_sparse_step": 1, "mlp_only_layers": [],
    "norm_topk_prob": True, "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
    "partial_rotary_factor": 0.25, "max_position_embeddings": 4096, "tie_word_embeddings": False,
    "attention_bias": False, "bos_token_id": 1, "eos_token_id": 2,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def test_server_with_linear_attn_inv_serves_gdn_prefill_through_our_kernel(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY_QWEN3_NEXT))
    port = _free_port()
    log_path = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if k not in ("SGLANG_LINEAR_ATTN_INV", "TRITON_INTERPRET")}
    cmd = [
        sys.executable, "-m", "sglang.launch_server", "--model-path", str(tmp_path), "--load-format", "dummy",
        "--skip-tokenizer-init", "--port", str(port), "--mem-fraction-static", "0.3", "--disable-cuda-graph",
        "--max-running-requests", "8", "--linear-attn-inv", "blockdoubling",
    ]
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.time() + 420
        while True:
            if server.poll() is not None:
                pytest.fail(f"server exited with {server.returncode}:\n{log_path.read_text()[-6000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"server not healthy in time:\n{log_path.read_text()[-6000:]}")
            time.sleep(2)
        out = _post(f"http://127.0.0.1:{port}/generate",
                    {"input_ids": list(range(3, 3 + 300)), "sampling_params": {"max_new_tokens": 4, "temperature": 0}})
        assert len(out["output_ids"]) == 4
    finally:
        if server.poll() is None:  # the whole session: launcher, tokenizer, scheduler, detokenizer
            os.killpg(server.pid, 15)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, 9)
    log = log_path.read_text()
    print(log[-4000:])
    assert "sglang-trinv: GDN chunk prefill (I+A)^-1 -> blockdoubling" in log  # the scheduler patched
    assert "sglang-trinv: first GDN chunk prefill served by blockdoubling" in log  # and our kernel ran
    assert "falls back to SGLang's stock kernel" not in log
    assert "prefill=triton" in log  # SGLang's "Linear attention kernel backend: decode=..., prefill=..." line

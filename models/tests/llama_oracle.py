"""Test oracle for the Llama port: transformers' LlamaForCausalLM.

    python llama_oracle.py tiny OUT_DIR     tiny random checkpoints (config.json + safetensors, one sharded) and
                                            their logits / greedy continuations for fixed token ids
    python llama_oracle.py gguf GGUF OUT    logits of transformers loading the same GGUF file (float32)

Outputs are safetensors files read by test_llama.cpp.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

# Token ids fed to every model (awkward length 37, repeated tokens).
IDS = [[3, 17, 42, 5, 5, 9, 81, 2, 64, 11, 30, 30, 7, 1, 98, 55, 23, 19, 4, 6, 8, 60, 61, 62, 12, 13, 14, 0, 44,
        45, 46, 47, 90, 91, 92, 93, 94]]

TINY = {
    # GQA, untied, llama3 rope scaling (Llama 3.1 style), sharded checkpoint.
    "gqa_llama3": dict(vocab_size=99, hidden_size=64, intermediate_size=37, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=500000.0,
                       tie_word_embeddings=False, max_position_embeddings=256,
                       rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                         original_max_position_embeddings=16)),
    # MHA, tied embeddings, explicit head_dim != hidden / heads, attention bias, linear scaling.
    "mha_tied": dict(vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                     num_attention_heads=2, num_key_value_heads=2, head_dim=24, rms_norm_eps=1e-6,
                     rope_theta=10000.0, tie_word_embeddings=True, attention_bias=True,
                     max_position_embeddings=128, rope_scaling=dict(rope_type="linear", factor=2.0)),
    # MQA.
    "mqa": dict(vocab_size=99, hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=6,
                num_key_value_heads=1, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                max_position_embeddings=128),
}


def tiny(out_dir):
    from transformers import LlamaConfig, LlamaForCausalLM
    for name, kw in TINY.items():
        torch.manual_seed(len(name))
        cfg = LlamaConfig(**kw, eos_token_id=97, bos_token_id=1)
        model = LlamaForCausalLM(cfg).eval()
        with torch.no_grad():  # the default init is small; widen it so every layer matters
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        path = os.path.join(out_dir, name)
        model.save_pretrained(path, safe_serialization=True,
                              max_shard_size="20KB" if name == "gqa_llama3" else "100MB")
        ids = torch.tensor(IDS)
        with torch.no_grad():
            logits = model(ids).logits
            gen = model.generate(ids[:, :9], max_new_tokens=12, do_sample=False, eos_token_id=97,
                                 pad_token_id=0)
        save_file({"ids": ids, "logits": logits.contiguous(), "generated": gen[:, 9:].contiguous()},
                  os.path.join(out_dir, name + "_expected.safetensors"))


def from_gguf(gguf_path, out):
    from transformers import AutoModelForCausalLM
    d, f = os.path.split(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    ids = torch.tensor(IDS) + 1000  # real-vocabulary tokens
    with torch.no_grad():
        logits = model(ids).logits
    save_file({"ids": ids, "logits": logits.contiguous(),
               "q_proj0": model.model.layers[0].self_attn.q_proj.weight.contiguous(),
               "k_proj0": model.model.layers[0].self_attn.k_proj.weight.contiguous()}, out)


if __name__ == "__main__":
    if sys.argv[1] == "tiny":
        tiny(sys.argv[2])
    else:
        from_gguf(sys.argv[2], sys.argv[3])

"""Architecture configs of released LLMs, written down so their networks build offline (no hub config fetch).

Each dict is the checkpoint's ``config.json`` reduced to what shapes the network and its numerics. With
``pretrained=True`` they are applied over the checkpoint's own config, so they must equal it: any value they change
is logged as a warning.
"""

from __future__ import annotations

from typing import Any

__all__ = ["QWEN2_0_5B_INSTRUCT", "VICUNA_7B_V15", "VICUNA_13B_V15"]

# lmsys/vicuna-7b-v1.5: Llama-2-7B architecture; 32000-token SentencePiece vocabulary, <unk>=0 <s>=1 </s>=2.
VICUNA_7B_V15: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "hidden_act": "silu",
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "vocab_size": 32000,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}

# lmsys/vicuna-13b-v1.5: Llama-2-13B architecture, same vocabulary.
VICUNA_13B_V15: dict[str, Any] = {
    **VICUNA_7B_V15,
    "hidden_size": 5120,
    "intermediate_size": 13824,
    "num_hidden_layers": 40,
    "num_attention_heads": 40,
    "num_key_value_heads": 40,
}

# Qwen/Qwen2-0.5B-Instruct: GQA (14 query heads, 2 KV heads), tied embeddings, 151936 rows for 151646 tokens.
QWEN2_0_5B_INSTRUCT: dict[str, Any] = {
    "model_type": "qwen2",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}

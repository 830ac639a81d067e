"""The dLLM of dmax: a native PyTorch LLaDA2-MoE (spec §6) with HF-compatible safetensors I/O.

Exports the config, the model, the prefix KV cache and the routing function. Nothing here
imports or registers with transformers.
"""

from .configuration import LLaDA2MoeConfig
from .kv_cache import KVCache
from .modeling import LLaDA2MoeForDiffusionLM
from .moe import route_tokens

__all__ = ["KVCache", "LLaDA2MoeConfig", "LLaDA2MoeForDiffusionLM", "route_tokens"]

"""Prefix KV cache for block decoding (spec §3.1).

Holds, per layer, the post-RoPE keys and the values of a committed prefix of positions
[0, length): tensors of shape [batch, num_key_value_heads, length, head_dim]. The model appends
to it (`cache_commit_length` in `LLaDA2MoeForDiffusionLM.forward`); the decoding frame owns when.

It must not know about blocks, masks or positions: every query may attend every cached position
(the cache is a committed prefix), and exact attention over it is the only rule (spec B.5, no
zero-padded slots).
"""

from __future__ import annotations

import torch


class KVCache:
    """Per-layer K/V of a committed prefix. Empty until the first append."""

    def __init__(self, num_layers: int) -> None:
        if num_layers <= 0:
            raise ValueError(f"KVCache: num_layers must be > 0, got {num_layers}")
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers

    @property
    def num_layers(self) -> int:
        return len(self.keys)

    @property
    def length(self) -> int:
        """Number of cached positions (the same for every layer between forwards)."""
        first = self.keys[0]
        return 0 if first is None else int(first.shape[2])

    def __len__(self) -> int:
        return self.length

    def get(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(K, V) of layer `layer_idx`, or None while the cache is empty."""
        k, v = self.keys[layer_idx], self.values[layer_idx]
        if k is None or v is None:
            return None
        return k, v

    def append(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Append K/V [b, kv_heads, n, head_dim] of n new positions to layer `layer_idx`."""
        if k.dim() != 4 or k.shape != v.shape:
            raise ValueError(f"KVCache.append: k and v must both be [b, kv_heads, n, head_dim], "
                             f"got {tuple(k.shape)} and {tuple(v.shape)}")
        old_k, old_v = self.keys[layer_idx], self.values[layer_idx]
        if old_k is None or old_v is None:
            # Own the storage so a later in-place edit of the caller's tensor cannot change the cache.
            self.keys[layer_idx], self.values[layer_idx] = k.detach().clone(), v.detach().clone()
            return
        if old_k.shape[:2] != k.shape[:2] or old_k.shape[3] != k.shape[3]:
            raise ValueError(f"KVCache.append: layer {layer_idx} holds {tuple(old_k.shape)}, "
                             f"cannot append {tuple(k.shape)}")
        self.keys[layer_idx] = torch.cat([old_k, k.detach()], dim=2)
        self.values[layer_idx] = torch.cat([old_v, v.detach()], dim=2)

    def clone(self) -> KVCache:
        """Independent copy (tensors cloned)."""
        other = KVCache(self.num_layers)
        other.keys = [None if t is None else t.clone() for t in self.keys]
        other.values = [None if t is None else t.clone() for t in self.values]
        return other

    def crop(self, length: int) -> None:
        """Keep only positions [0, length) (e.g. to drop a speculative commit)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"KVCache.crop: length must be in [0, {self.length}], got {length}")
        for i in range(self.num_layers):
            k, v = self.keys[i], self.values[i]
            if k is None or v is None:
                continue
            if length == 0:
                self.keys[i] = self.values[i] = None
            else:
                self.keys[i], self.values[i] = k[:, :, :length].clone(), v[:, :, :length].clone()

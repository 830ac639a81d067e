"""Prefix KV cache for block decoding (spec §3.1).

Holds, per layer, the post-RoPE keys and the values of a committed prefix of positions [0, length):
tensors of shape [batch, num_key_value_heads, length, head_dim]. The model appends to it
(`cache_commit_length` in `LLaDA2MoeForDiffusionLM.forward`); the decoding frame owns when.

With a `capacity` (the decoding frame knows every row's final length), storage is allocated once per
layer and a forward writes its new keys straight after the committed prefix (`extend`), attends over
that view and, on a commit, only moves `length`: no copy of the cache per forward. Without one, appends
concatenate (simple, for callers that do not know the final length). Both hold the same values, so
attention sees identical inputs either way.

It must not know about blocks, masks or positions: every query may attend every cached position
(the cache is a committed prefix), and exact attention over it is the only rule (spec B.5, no
zero-padded slots are ever attended).
"""

from __future__ import annotations

import torch


class KVCache:
    """Per-layer K/V of a committed prefix. Empty until the first write."""

    def __init__(self, num_layers: int, capacity: int | None = None) -> None:
        if num_layers <= 0:
            raise ValueError(f"KVCache: num_layers must be > 0, got {num_layers}")
        if capacity is not None and capacity <= 0:
            raise ValueError(f"KVCache: capacity must be > 0, got {capacity}")
        self.capacity = capacity
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self._length = 0

    @property
    def num_layers(self) -> int:
        return len(self.keys)

    @property
    def length(self) -> int:
        """Number of committed positions (the same for every layer between forwards)."""
        return self._length

    def __len__(self) -> int:
        return self.length

    def get(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(K, V) of the committed prefix of layer `layer_idx`, or None while the cache is empty."""
        k, v = self.keys[layer_idx], self.values[layer_idx]
        if k is None or v is None or self._length == 0:
            return None
        return k[:, :, : self._length], v[:, :, : self._length]

    def extend(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, V) of [committed prefix, k/v] for attention. With a capacity, `k`/`v` are written after the
        prefix in place (a later `commit` keeps the first n of them); without one, they are concatenated."""
        self._check(layer_idx, k, v)
        if self.capacity is None:
            past = self.get(layer_idx)
            return (k, v) if past is None else (torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2))
        end = self._length + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KVCache: {end} positions exceed the capacity {self.capacity}")
        if self.keys[layer_idx] is None:
            shape = (k.shape[0], k.shape[1], self.capacity, k.shape[3])
            self.keys[layer_idx] = k.new_empty(shape)
            self.values[layer_idx] = v.new_empty(shape)
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys[:, :, self._length : end] = k
        values[:, :, self._length : end] = v
        return keys[:, :, :end], values[:, :, :end]

    def commit(self, n: int, layers_written: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        """Make the first `n` positions of the last `extend` (capacity) or of `layers_written` part of the
        prefix; call once per forward, after every layer ran, so a failing forward changes nothing."""
        if self.capacity is None:
            assert layers_written is not None
            for layer_idx, (k, v) in enumerate(layers_written):
                self.append(layer_idx, k[:, :, :n], v[:, :, :n])
            return
        self._length += n

    def append(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Append K/V [b, kv_heads, n, head_dim] of n new positions to layer `layer_idx`."""
        self._check(layer_idx, k, v)
        if self.capacity is not None:
            self.extend(layer_idx, k, v)
            if layer_idx == self.num_layers - 1:
                self._length += k.shape[2]
            return
        old_k, old_v = self.keys[layer_idx], self.values[layer_idx]
        if old_k is None or old_v is None:
            # Own the storage so a later in-place edit of the caller's tensor cannot change the cache.
            self.keys[layer_idx], self.values[layer_idx] = k.detach().clone(), v.detach().clone()
        else:
            self.keys[layer_idx] = torch.cat([old_k, k.detach()], dim=2)
            self.values[layer_idx] = torch.cat([old_v, v.detach()], dim=2)
        if layer_idx == self.num_layers - 1:
            self._length = int(self.keys[layer_idx].shape[2])

    def _check(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> None:
        if k.dim() != 4 or k.shape != v.shape:
            raise ValueError(f"KVCache.append: k and v must both be [b, kv_heads, n, head_dim], "
                             f"got {tuple(k.shape)} and {tuple(v.shape)}")
        old = self.keys[layer_idx]
        if old is not None and (old.shape[:2] != k.shape[:2] or old.shape[3] != k.shape[3]):
            raise ValueError(f"KVCache.append: layer {layer_idx} holds {tuple(old.shape)}, "
                             f"cannot append {tuple(k.shape)}")

    def clone(self) -> KVCache:
        """Independent copy (tensors cloned)."""
        other = KVCache(self.num_layers, self.capacity)
        other.keys = [None if t is None else t.clone() for t in self.keys]
        other.values = [None if t is None else t.clone() for t in self.values]
        other._length = self._length
        return other

    def crop(self, length: int) -> None:
        """Keep only positions [0, length) (e.g. to drop a speculative commit)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"KVCache.crop: length must be in [0, {self.length}], got {length}")
        if self.capacity is None:
            for i in range(self.num_layers):
                k, v = self.keys[i], self.values[i]
                if k is None or v is None:
                    continue
                if length == 0:
                    self.keys[i] = self.values[i] = None
                else:
                    self.keys[i], self.values[i] = k[:, :, :length].clone(), v[:, :, :length].clone()
        self._length = length


class StaticKVCache:
    """A batch-of-one prefix cache whose every tensor has a fixed shape, so that a block forward over it
    can be captured once by `torch.compile` or a CUDA graph (spec §4.5: the official code compiles the
    32- and 64-token shapes).

    Buffers are [1, kv_heads, capacity, head_dim] per layer; the committed length is a 0-d tensor; a
    forward writes its new keys at [length, length + L) (`index_copy_`, no Python branching on data) and
    attends over the whole buffer with a mask that opens the committed prefix and the new keys by the
    caller's rule. Positions past them are masked (weight exactly 0), so this equals exact attention up
    to float rounding (the softmax runs over a longer, zero-weighted row).
    """

    def __init__(self, num_layers: int, capacity: int, kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        shape = (1, kv_heads, capacity, head_dim)
        self.capacity = capacity
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.length_tensor = torch.zeros((), dtype=torch.long, device=device)
        self.positions = torch.arange(capacity, device=device)

    @property
    def num_layers(self) -> int:
        return len(self.keys)

    @property
    def length(self) -> int:
        return int(self.length_tensor)

    def extend(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new K/V after the committed prefix; return the whole buffers."""
        index = self.length_tensor + self.positions[: k.shape[2]]
        self.keys[layer_idx].index_copy_(2, index, k.to(self.keys[layer_idx].dtype))
        self.values[layer_idx].index_copy_(2, index, v.to(self.values[layer_idx].dtype))
        return self.keys[layer_idx], self.values[layer_idx]

    def attention_mask(self, new_mask: torch.Tensor) -> torch.Tensor:
        """[1, 1, L, capacity]: the committed prefix, and the new keys as `new_mask` ([L, L] or
        [1, 1, L, L], new x new) allows; everything after them closed."""
        new_mask = new_mask.reshape(new_mask.shape[-2], new_mask.shape[-1])
        length = new_mask.shape[-1]
        relative = self.positions - self.length_tensor  # key index relative to the first new key
        inside = (relative >= 0) & (relative < length)
        opened = new_mask[:, relative.clamp(0, length - 1)] & inside  # [L, capacity]
        return ((self.positions < self.length_tensor) | opened)[None, None]

    def commit(self, n: int, layers_written: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        """The first `n` keys of the last forward join the prefix (they were written by `extend`)."""
        self.length_tensor += n

"""The decoder's configuration: one dataclass, recorded in every checkpoint."""
from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field, fields
from typing import Any

VALUE_RESIDUALS = ("none", "resformer", "learnable", "svformer")
SHORTCUTS = ("none", "depth", "full", "last_layer")
#: The readings whose shortcut is a module after the last block, with its own heads and width.
AFTER_LAST_BLOCK = ("depth", "full")
POSITIONS = ("rope", "learned")
MLPS = ("gelu", "swiglu")


@dataclass
class GPTConfig:
    """A pre-norm GPT with optional value residual and layerwise attention shortcuts.

    Every field has a safe default; ``shortcut="none", value_residual="none"`` is a plain GPT.
    """

    vocab_size: int = 1024
    """Ids per stream (every stream shares this size)."""
    n_layer: int = 6
    n_head: int = 6
    n_kv_head: int | None = None
    """Key/value heads for grouped-query attention; ``None`` means ``n_head`` (plain multi-head)."""
    n_embd: int = 384
    block_size: int = 512
    """Context length in tokens (steps, for several streams)."""
    n_streams: int = 1
    """Parallel token streams (acoustic ``delay`` layout): summed embeddings, one head per stream."""
    positions: str = "rope"
    """``rope`` (rotary, base ``rope_base``) or ``learned`` absolute position embeddings."""
    rope_base: float = 10000.0
    mlp: str = "gelu"
    """``gelu`` (4x GELU MLP) or ``swiglu`` (gated, 8/3 x width rounded to 64)."""
    dropout: float = 0.0
    bias: bool = False
    tie_embeddings: bool = True
    """Share each stream's input embedding with its output head."""
    value_residual: str = "none"
    """``none``, ``resformer`` (V_n' = (V_1 + V_n)/2), ``learnable`` (λ pair per layer),
    ``svformer`` (layers >= 2 reuse V_1 and have no value projection)."""
    shortcut: str = "none"
    """``none``, ``depth`` (final representation attends over depth at its own position) or
    ``full`` (over every position s <= t of every selected depth), both after the last block; or
    ``last_layer`` (the final block's own attention takes its keys and values from every selected
    depth at every position s <= t; see ``shortcutlm.models.last_layer``)."""
    shortcut_layers: list[int] | None = None
    """Depths the shortcut reads: 0 is the embedding output, l in 1..n_layer-1 the output of
    block l. ``None`` selects all of them."""
    shortcut_heads: int | None = None
    """Heads of the shortcut attention; ``None`` means ``n_head``. (``last_layer`` uses the final
    block's own heads and leaves this and ``shortcut_dim`` unset.)"""
    shortcut_dim: int | None = None
    """Width of the shortcut's queries, keys and values; ``None`` means ``n_embd // 4``."""
    shortcut_hidden: int | None = None
    """Hidden width of each per-depth MLP feature map φ_l; ``None`` means ``n_embd // 8``.
    (These defaults keep the depth shortcut's training step within about 2% of the plain
    model's at the benchmark config; ``shortcutlm bench model`` measures it.)"""
    init_std: float = 0.02
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes carried with the config (never read by the model)."""

    def __post_init__(self) -> None:
        if self.shortcut in AFTER_LAST_BLOCK:  # record the shortcut's sizes, so a checkpoint never depends on defaults
            self.shortcut_heads, self.shortcut_dim, self.shortcut_hidden = self._shortcut_sizes()
        elif self.shortcut == "last_layer":
            self.shortcut_hidden = self._shortcut_sizes()[2]
        self.validate()

    def _shortcut_sizes(self) -> tuple[int, int, int]:
        """(heads, width, φ hidden width): the given sizes, or the documented defaults."""
        heads = self.shortcut_heads or self.n_head
        return (heads, self.shortcut_dim or max(heads, self.n_embd // 4),
                self.shortcut_hidden or max(1, self.n_embd // 8))

    # Derived sizes -------------------------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def kv_cache_bytes(self, batch: int, context: int, bytes_per_value: int) -> tuple[int, int]:
        """``(attention, shortcut)`` bytes a decoding cache of ``context`` positions holds, in closed form.

        With w = kv_heads·head_dim, D selected depths and L layers, per sequence and position:
        keys L·w, values L·w (``svformer``: w, every later layer reading layer 1's); the
        ``last_layer`` reading's final layer keeps keys and values for each of its D depths, so it
        adds (D−1)·w to each; the ``full`` shortcut caches its own per-depth keys and values,
        2·D·d_s (d_s = ``shortcut_dim``). ``depth`` caches nothing: it reads depths at the current
        position only. ``bench model`` checks these against the cache's tensors."""
        w = self.kv_heads * self.head_dim
        last_slots = len(self.depths) if self.shortcut == "last_layer" else 1
        key_slots = self.n_layer - 1 + last_slots
        if self.value_residual == "svformer":
            value_slots = last_slots if self.n_layer == 1 else 1
        else:
            value_slots = key_slots
        per_position = bytes_per_value * batch * context
        attention = per_position * w * (key_slots + value_slots)
        shortcut = per_position * 2 * len(self.depths) * self.sc_dim if self.shortcut == "full" else 0
        return attention, shortcut

    @property
    def depths(self) -> list[int]:
        """The depths the shortcut reads, sorted."""
        if self.shortcut_layers is None:
            return list(range(self.n_layer))
        return sorted(set(self.shortcut_layers))

    @property
    def sc_heads(self) -> int:
        return self._shortcut_sizes()[0]

    @property
    def sc_dim(self) -> int:
        return self._shortcut_sizes()[1]

    @property
    def sc_hidden(self) -> int:
        return self._shortcut_sizes()[2]

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"GPTConfig: {msg}")

        need(self.value_residual in VALUE_RESIDUALS,
             f"value_residual={self.value_residual!r}, expected one of {VALUE_RESIDUALS}")
        need(self.shortcut in SHORTCUTS, f"shortcut={self.shortcut!r}, expected one of {SHORTCUTS}")
        need(self.positions in POSITIONS, f"positions={self.positions!r}, expected one of {POSITIONS}")
        need(self.mlp in MLPS, f"mlp={self.mlp!r}, expected one of {MLPS}")
        for name in ("vocab_size", "n_layer", "n_head", "n_embd", "block_size", "n_streams"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        need(self.n_embd % self.n_head == 0, f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        need(self.n_head % self.kv_heads == 0, f"n_head={self.n_head} is not divisible by n_kv_head={self.kv_heads}")
        need(self.positions != "rope" or self.head_dim % 2 == 0, "RoPE needs an even head dimension")
        need(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        if self.shortcut != "none":
            bad = [d for d in self.depths if not 0 <= d < self.n_layer]
            need(not bad, f"shortcut_layers {bad} out of range: depths are 0 (embeddings) .. {self.n_layer - 1}")
            need(len(self.depths) >= 1, "shortcut_layers selects no depth")
            need(self.shortcut not in AFTER_LAST_BLOCK or self.sc_dim % self.sc_heads == 0,
                 f"shortcut_dim={self.sc_dim} is not divisible by shortcut_heads={self.sc_heads}")
            need(self.shortcut != "last_layer" or (self.shortcut_heads is None and self.shortcut_dim is None),
                 "the last_layer shortcut uses the final block's own heads and width: leave shortcut_heads "
                 "and shortcut_dim unset")
            need(self.shortcut != "full" or self.positions != "rope" or (self.sc_dim // self.sc_heads) % 2 == 0,
                 "the full shortcut with RoPE needs an even shortcut head dimension")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            near = difflib.get_close_matches(unknown[0], sorted(known), n=1, cutoff=0.6) if len(unknown) == 1 else []
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ValueError(f"GPTConfig: unknown field(s) {unknown}{hint} (known fields: {sorted(known)})")
        return cls(**data)

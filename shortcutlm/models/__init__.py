"""The shared decoder, its losses and its sampling loop."""
from __future__ import annotations

from shortcutlm.models.config import GPTConfig
from shortcutlm.models.gpt import GPT, ForwardOutput, KVCache, flops_per_token, weight_decay_groups
from shortcutlm.models.losses import stream_losses, token_losses
from shortcutlm.models.sampling import SamplingSettings, generate, trim_at_stop

__all__ = ["GPT", "GPTConfig", "ForwardOutput", "KVCache", "SamplingSettings", "flops_per_token", "generate",
           "stream_losses", "token_losses", "trim_at_stop", "weight_decay_groups"]

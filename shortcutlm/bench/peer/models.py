"""Both models built by one function (``make_trainee``): x-transformers' decoder configured to be our
function, our initialisation or our weights on it (``copy_weights_``), and the logit check that
the two compute the same thing (``equivalence``)."""
from __future__ import annotations

import math
from typing import Any, cast
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from shortcutlm.bench.model import Trainee
from shortcutlm.bench.peer.config import INITS, VARIANTS
from shortcutlm.models import GPT, GPTConfig, weight_decay_groups
from shortcutlm.models.gpt import Block
from shortcutlm.models.optim import adamw


def peer_model(config: GPTConfig, init: str = "gpt2", flash: bool = True) -> nn.Module:
    """An x-transformers ``TransformerWrapper`` of our config's size and shape.

    ``init``: ``gpt2`` (our GPT-2 initialisation scheme, drawn from the current RNG), ``copy``
    (the same, to be overwritten by ``copy_weights_``) or ``theirs`` (x-transformers' own
    initialisation and its dim**-0.5 tied-logit scale, which belongs with that init).
    ``flash``: attention through ``F.scaled_dot_product_attention`` as ours does; ``False`` keeps
    x-transformers' default einsum attention (the same function, computed its own way).
    """
    from x_transformers import Decoder, TransformerWrapper

    if init not in INITS:
        raise ValueError(f"init={init!r}, expected one of {INITS}")
    if config.positions != "rope" or config.mlp != "gelu" or config.n_streams != 1 or config.shortcut != "none" \
            or config.value_residual not in VARIANTS.values() or config.n_kv_head not in (None, config.n_head) \
            or config.bias or not config.tie_embeddings or config.rope_base != 10000.0:
        raise ValueError("the peer is built for a one-stream RoPE (base 10000) GELU decoder without bias, shortcut or "
                         "GQA, with tied embeddings and value_residual none/resformer")
    ours_init = init != "theirs"
    decoder = Decoder(
        dim=config.n_embd, depth=config.n_layer, heads=config.n_head,
        attn_dim_head=config.head_dim,                 # theirs defaults to 64 whatever the width
        rotary_pos_emb=True, rotary_emb_dim=config.head_dim,  # theirs rotates half of each head by default
        attn_flash=flash,                              # F.scaled_dot_product_attention, as ours
        ff_mult=4, ff_no_bias=True,                    # 4x GELU MLP without biases (GELU is their default)
        norm_add_unit_offset=False,                    # LayerNorm gain stored as 1, not as an offset from 1
        attn_dropout=config.dropout, ff_dropout=config.dropout,
        add_value_residual=config.value_residual == "resformer",
        learned_value_residual_mix=False,              # fixed 0.5/0.5 as the paper; theirs learns a per-token
                                                       # gate by default
        verbose=False,
    )
    net = TransformerWrapper(
        num_tokens=config.vocab_size, max_seq_len=config.block_size, attn_layers=decoder,
        use_abs_pos_emb=False, tie_embedding=True, tie_embedding_scale=1.0 if ours_init else None,
        emb_dropout=config.dropout,
    )
    if ours_init:
        gpt2_init_(net, config)
    return net


def _peer_blocks(net: nn.Module) -> list[tuple[str, Any, Any]]:
    """(layer type, pre-branch norm, branch) for each attention / feed-forward layer, in order.

    The norm and branch are x-transformers modules reached by their attribute names (``gamma``,
    ``to_out``, ``ff``), which ``nn.Module`` cannot type: they are ``Any`` to the type checker."""
    layers: Any = net.attn_layers
    return [(kind, layer[0][0], layer[1]) for kind, layer in zip(layers.layer_types, layers.layers)]


def gpt2_init_(net: nn.Module, config: GPTConfig) -> None:
    """Our initialisation (``GPT.reset_parameters``) on the peer: N(0, 0.02) for every matrix and
    the embedding, residual output projections scaled by 1/sqrt(2L), LayerNorm gains 1."""
    std = config.init_std
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, std)
                bias = getattr(module, "bias", None)
                if bias is not None:
                    nn.init.zeros_(bias)
        for kind, norm, branch in _peer_blocks(net):
            out = branch.to_out if kind == "a" else branch.ff[-1]
            nn.init.normal_(out.weight, 0.0, std / math.sqrt(2 * config.n_layer))
            norm.gamma.fill_(1.0)
        layers: Any = net.attn_layers  # x-transformers' Decoder, untyped
        layers.final_norm.gamma.fill_(1.0)


def rotary_permutation(head_dim: int) -> Tensor:
    """Row order taking our rotate-half pairs (i, i + D/2) to x-transformers' interleaved (2i, 2i+1)."""
    half = head_dim // 2
    return torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).flatten()


@torch.no_grad()
def copy_weights_(ours: GPT, theirs: nn.Module) -> None:
    """Make the peer compute our model's function: copy every parameter, permuting the rows of
    the query and key projections within each head to move our rotary pairs onto theirs."""
    cfg = ours.config
    perm = rotary_permutation(cfg.head_dim)

    def qk(weight: Tensor, heads: int) -> Tensor:
        return weight.view(heads, cfg.head_dim, -1)[:, perm].reshape(weight.shape)

    peer: Any = theirs  # x-transformers' TransformerWrapper, reached by its attribute names
    pairs: list[tuple[Tensor, Tensor]] = [(peer.token_emb.emb.weight, cast(nn.Embedding, ours.embeddings[0]).weight),
                                          (peer.attn_layers.final_norm.gamma, ours.ln_f.weight)]
    blocks = _peer_blocks(theirs)
    for i, block in enumerate(cast("Iterable[Block]", ours.blocks)):
        (_, attn_norm, attn), (_, ff_norm, ff) = blocks[2 * i], blocks[2 * i + 1]
        v_proj = block.attn.v_proj
        assert v_proj is not None  # the peer's variants (none, resformer) give every layer its own values
        pairs += [(attn_norm.gamma, block.ln_1.weight), (attn.to_q.weight, qk(block.attn.q_proj.weight, cfg.n_head)),
                  (attn.to_k.weight, qk(block.attn.k_proj.weight, cfg.kv_heads)), (attn.to_v.weight, v_proj.weight),
                  (attn.to_out.weight, block.attn.o_proj.weight), (ff_norm.gamma, block.ln_2.weight),
                  (ff.ff[0][0].weight, block.mlp.up.weight), (ff.ff[-1].weight, block.mlp.down.weight)]
    covered = {id(dst) for dst, _ in pairs}
    left = [n for n, p in theirs.named_parameters() if id(p) not in covered]
    if left:
        raise ValueError(f"the peer has parameters with no counterpart in ours: {left}")
    for dst, src in pairs:
        dst.copy_(src)


def peer_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups for the peer by our one rule (its model has no λ to exempt)."""
    return weight_decay_groups(model, weight_decay)


class PeerTrainee(Trainee):
    """``bench.model.Trainee`` (same step: forward, our loss, backward, clip 1.0, AdamW) around the peer."""

    def __init__(self, config: GPTConfig, batch: int, device: str, dtype: torch.dtype, seed: int = 0,
                 init: str = "gpt2", flash: bool = True) -> None:
        torch.manual_seed(seed)
        self.config = config
        # The peer stands where Trainee keeps our GPT; ``step`` asks of it only a forward and parameters.
        self.model = peer_model(config, init, flash).to(device)  # type: ignore[assignment]
        self.forward = self.model
        self.opt = adamw(peer_param_groups(self.model, 0.1), device, 3e-4, (0.9, 0.95))
        self.idx = torch.randint(0, config.vocab_size, (batch, config.block_size + 1), device=device)
        self.device, self.dtype = device, dtype


def make_trainee(impl: str, config: GPTConfig, batch: int, device: str, dtype: torch.dtype, seed: int,
                 init: str, flash: bool = True) -> Trainee:
    if impl == "ours":
        return Trainee(config, batch, device, dtype, seed)
    trainee = PeerTrainee(config, batch, device, dtype, seed, init, flash)
    if init == "copy":
        torch.manual_seed(seed)
        copy_weights_(GPT(config), trainee.model)
    return trainee


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def equivalence(config: GPTConfig, device: str, tokens: int | None = None, flash: bool = True) -> dict[str, Any]:
    """Our fresh model and the peer with our weights copied: largest logit difference on one window."""
    torch.manual_seed(0)
    ours = GPT(config).to(device).eval()
    theirs = peer_model(config, "copy", flash).to(device).eval()
    copy_weights_(ours, theirs)
    idx = torch.randint(0, config.vocab_size, (1, tokens or config.block_size), device=device)
    a, b = ours(idx).float(), theirs(idx).float()
    return {"max_abs_logit_diff": float((a - b).abs().max()), "max_abs_logit": float(a.abs().max()),
            "tokens": idx.shape[1]}

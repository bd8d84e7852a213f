"""What ``bench peer`` compares, its goals, and every difference left between the two decoders."""
from __future__ import annotations

#: Our ``value_residual`` setting per compared variant (theirs: ``add_value_residual``).
VARIANTS = {"plain": "none", "resformer": "resformer"}
IMPLEMENTATIONS = ("ours", "theirs")
#: Relative parameter-count difference the peer may have (it is configured to have none).
PARAM_TOLERANCE = 0.001
#: The goals the benchmark judges.
STEP_RATIO_TARGET = 0.5
GENERATION_RATIO_TARGET = 3.0
#: What ``bench.model.measure_generation`` uses for ours; the peer gets the same.
PROMPT_TOKENS = 16
TOP_K = 50
INITS = ("gpt2", "copy", "theirs")


def peer_missing() -> str | None:
    """Why the peer cannot be built here (``None`` when x-transformers imports)."""
    try:
        import x_transformers  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"x-transformers is not importable ({exc}); install the bench extra: pip install -e '.[bench]'"
    return None


def peer_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("x-transformers")
    except PackageNotFoundError:
        return "unknown"


def variant_names(spec: str) -> list[str]:
    """The ``--variants`` list, checked against ``VARIANTS``."""
    names = [v.strip() for v in spec.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    return names


def differences(init: str, flash: bool = True) -> list[dict[str, str]]:
    """Every remaining difference between the two decoders and how the benchmark handles it."""
    init_row = {
        "gpt2": "theirs gets our scheme (N(0, 0.02), residual output projections / sqrt(2L), gains 1), drawn "
                "from the same seed but in a different order, so the two start from different weights of the "
                "same distribution",
        "copy": "theirs starts from exactly our initial weights (copy_weights_), so the loss comparison isolates "
                "the implementations",
        "theirs": "theirs keeps its own init (default nn.Linear init, kaiming-normal embedding) and its dim**-0.5 "
                  "tied-logit scale, which belongs with that init",
    }[init]
    return [
        {"aspect": "rotary pairing", "ours": "rotate-half: dims (i, i + D/2) form a pair",
         "theirs": "interleaved: dims (2i, 2i+1) form a pair",
         "handled": "same frequencies, a fixed permutation of each head's query/key dims, so the same function "
                    "class; the equivalence check permutes q/k rows and matches logits"},
        {"aspect": "rotary width", "ours": "whole head", "theirs": "default rotary_emb_dim = dim_head // 2",
         "handled": "set rotary_emb_dim = head dim"},
        {"aspect": "head dimension", "ours": "n_embd / n_head", "theirs": "default attn_dim_head = 64",
         "handled": "set attn_dim_head = n_embd / n_head"},
        {"aspect": "value residual mix", "ours": "fixed V_n' = 0.5 V_1 + 0.5 V_n (paper, Eq. 7)",
         "theirs": "default learned per-token sigmoid gate (Linear(dim, heads) per layer)",
         "handled": "learned_value_residual_mix=False: theirs uses V_1.lerp(V_n, 0.5), the same mix, same place "
                    "(after the value projection, before attention; the mixed value is cached)"},
        {"aspect": "LayerNorm gain", "ours": "nn.LayerNorm(bias=False), gain initialised to 1",
         "theirs": "default unit offset: gain stored as gamma + 1 with gamma initialised to 0",
         "handled": "norm_add_unit_offset=False; both are a bias-free LayerNorm with eps 1e-5"},
        {"aspect": "tied output scale", "ours": "logits = h · E^T",
         "theirs": "default logits = h · E^T · dim**-0.5",
         "handled": "tie_embedding_scale=1.0" + (" (kept at dim**-0.5 under --peer-init theirs)"
                                                 if init == "theirs" else "")},
        {"aspect": "positions", "ours": "RoPE only", "theirs": "absolute position embedding by default",
         "handled": "use_abs_pos_emb=False (also implied by rotary_pos_emb)"},
        {"aspect": "MLP", "ours": "Linear(d, 4d) → exact GELU → Linear(4d, d), no bias",
         "theirs": "same layers, biases by default", "handled": "ff_mult=4, ff_no_bias=True"},
        {"aspect": "attention kernel", "ours": "F.scaled_dot_product_attention; on CPU a whole causal sequence "
                                               "through blocked batched products where measured faster "
                                               "(models.blocked_attention: training, prefill)",
         "theirs": "einsum attention unless attn_flash",
         "handled": "attn_flash=True (scaled_dot_product_attention); our blocked CPU path is part of what is "
                    "measured" if flash else
         "not matched (--peer-attention einsum): theirs keeps its default einsum attention, as out of the box"},
        {"aspect": "initialisation", "ours": "GPT-2: N(0, 0.02), residual output projections / sqrt(2L)",
         "theirs": "nn.Linear default (kaiming-uniform), kaiming-normal embedding", "handled": init_row},
        {"aspect": "loss and optimiser", "ours": "stream_losses, AdamW(β 0.9/0.95), clip 1.0, decay on matrices only",
         "theirs": "AutoregressiveWrapper.forward has its own loss",
         "handled": "training calls both models' forward for logits and applies our loss, clipping, AdamW and "
                    "decay rule (matrices and the embedding decayed, gains not) to both"},
        {"aspect": "KV cache", "ours": "preallocated per layer, keys rotated once when written",
         "theirs": "grown with torch.cat each step; keys cached before rotation and the whole cache rotated "
                   "again every step",
         "handled": "not matched: this is part of the implementation being measured"},
        {"aspect": "generation loop", "ours": "shortcutlm.models.generate, LM head on the last position",
         "theirs": "AutoregressiveWrapper.generate(cache_kv=True)",
         "handled": "same prompt length (16), new tokens, top-k 50 and temperature 1; random streams differ "
                    "(ours a seeded generator, theirs the global RNG), so sampled tokens differ"},
        {"aspect": "rotary base", "ours": "rope_base (10000 by default)", "theirs": "10000, fixed",
         "handled": "the peer is only built for rope_base 10000"},
        {"aspect": "parameters", "ours": "counted by GPT.num_params", "theirs": "counted over net.parameters()",
         "handled": f"reported for both; they must agree within {PARAM_TOLERANCE:.1%} (they are equal)"},
    ]

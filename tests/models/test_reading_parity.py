"""The shortcut readings differ only in how they read: the parts they share start alike and are
treated alike by the optimiser, so a comparison between readings compares the readings."""
from __future__ import annotations

import pytest
import torch

from shortcutlm.models import GPT
from shortcutlm.models.config import GPTConfig

READINGS = ("depth", "full", "last_layer")
#: The parts every reading has, by their last name: (decayed by AdamW, how they start).
SHARED = {"w1": (True, "drawn"), "b1": (False, "zero"), "depth_embedding": (False, "zero")}


def shortcut_parts(reading: str, std: float = 0.02) -> dict[str, tuple[bool, str]]:
    """Each shortcut parameter of a fresh model of ``reading``: (decayed, 'zero', 'one' or 'drawn')."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, n_layer=4, n_head=2, n_embd=32, block_size=16, shortcut=reading))
    decayed = {id(p) for p in model.param_groups(0.1)[0]["params"]}
    no_decay = {id(p) for p in model.param_groups(0.1)[1]["params"]}
    parts = {}
    for name, p in model.named_parameters():
        if ".phi." in name or name.startswith("shortcut."):
            assert (id(p) in decayed) != (id(p) in no_decay), name  # in exactly one group
            value = p.detach()
            start = "zero" if not value.any() else "one" if bool((value == 1).all()) else "drawn"
            if start == "drawn":
                assert value.std().item() == pytest.approx(std, rel=0.5), name
            short = name.split(".phi.")[-1] if ".phi." in name else name.removeprefix("shortcut.")
            parts[short] = (id(p) in decayed, start)
    return parts


@pytest.mark.parametrize("reading", READINGS)
def test_shared_parts_start_and_decay_alike(reading):
    parts = shortcut_parts(reading)
    assert {name: parts[name] for name in SHARED} == SHARED


def test_the_decay_table_of_every_reading():
    """The whole table, so a new parameter in one reading is a decision, not an accident."""
    table = {reading: shortcut_parts(reading) for reading in READINGS}
    assert table["depth"] == table["full"] == {**SHARED, "w2": (True, "drawn"), "q_norm.weight": (False, "one"),
                                               "q_proj.weight": (True, "drawn"), "o_proj.weight": (True, "zero")}
    # last_layer's second feature layer starts at zero so that a fresh φ is the identity: its keys and
    # values are then the final block's own projections of each depth.
    assert table["last_layer"] == {**SHARED, "w2": (True, "zero")}

"""diagnostics: the pure measures on hand-made tensors, and real tiny checkpoints checked against
hand computations from ``GPT.forward(return_internals=True)``."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shortcutlm.artifacts.checkpoint import load_folder
from shortcutlm.cli import main as cli_main
from shortcutlm.datasets.batches import eval_batches
from shortcutlm.run.diagnostics import (DEPTH_MAP_COLORBAR, compare_checkpoints, depth_map_for_checkpoint,
                                    diagnose_checkpoint, diagnose_model, token_importance_entropy, token_similarity,
                                    uniform_causal_entropy, uniform_causal_first_attention, validation_windows)
from shortcutlm.models import GPT, GPTConfig
from shortcutlm.tokenizers import load_tokenizer
from tests.fixtures_eval import _once, make_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def sv_ckpt(eval_root, text_data):
    """Three layers with shared values (SVFormer)."""
    return _once("diag_sv", lambda: make_checkpoint(eval_root / "diag_sv", text_data, steps=3, seed=2, n_layer=3,
                                                    value_residual="svformer"))


@pytest.fixture(scope="session")
def full_ckpt(eval_root, text_data):
    """The ``full`` shortcut with grouped-query attention and two selected depths."""
    return _once("diag_full", lambda: make_checkpoint(eval_root / "diag_full", text_data, steps=3, seed=3, n_layer=3,
                                                      n_head=4, n_kv_head=2, shortcut="full",
                                                      shortcut_layers=[0, 2]))


@pytest.fixture(scope="session")
def last_layer_ckpt(eval_root, text_data):
    """The ``last_layer`` shortcut with grouped-query attention, reading the embeddings and its own input."""
    return _once("diag_last_layer", lambda: make_checkpoint(eval_root / "diag_last_layer", text_data, steps=3, seed=4,
                                                            n_layer=3, n_head=4, n_kv_head=2, shortcut="last_layer",
                                                            shortcut_layers=[0, 2]))


def causal_uniform(t: int) -> torch.Tensor:
    return torch.tril(torch.ones(t, t)) / torch.arange(1, t + 1)[:, None]


# ------------------------------------------------------------------------------------ pure measures

def test_entropy_of_hand_made_attention():
    t = 7
    sink = torch.zeros(t, t)
    sink[:, 0] = 1.0  # every query puts all its mass on token 0
    assert token_importance_entropy(sink) == pytest.approx(0.0, abs=1e-12)
    assert token_importance_entropy(torch.eye(t)) == pytest.approx(math.log(t))  # equal column mass
    # the causal baseline: a_j = sum_{i >= j} 1/(i+1), between the two extremes
    baseline = uniform_causal_entropy(t)
    a = causal_uniform(t).sum(0).double()
    p = a / a.sum()
    assert baseline == pytest.approx(float(-(p * p.log()).sum()))
    assert token_importance_entropy(causal_uniform(t)) == pytest.approx(baseline)
    assert 0 < baseline < math.log(t)
    # heads (and windows) are averaged before the column sums: a sink head and a diagonal head
    both = torch.stack([sink, torch.eye(t)])[None]  # [1, 2, T, T]
    mixed = (sink + torch.eye(t)) / 2
    assert token_importance_entropy(both) == pytest.approx(token_importance_entropy(mixed))
    a = mixed.sum(0).double() / t
    assert token_importance_entropy(both) == pytest.approx(float(-(a * a.log()).sum()))
    assert uniform_causal_first_attention(t) == pytest.approx(float(causal_uniform(t)[:, 0].mean()))


def test_token_similarity_is_mean_off_diagonal_cosine():
    h = torch.randn(9, 5, generator=torch.Generator().manual_seed(0))
    cos = F.cosine_similarity(h[:, None], h[None, :], dim=-1).double()
    off = cos[~torch.eye(9, dtype=torch.bool)]
    assert token_similarity(h) == pytest.approx(float(off.mean()))
    assert token_similarity(torch.ones(4, 3) * torch.arange(1, 5.)[:, None]) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------ checkpoints

def _hand_windows(shard_dir, t, n):
    windows = []
    for batch in eval_batches(shard_dir, "valid", t, 1):
        windows.append(batch[0, :-1])
        if len(windows) == n:
            return torch.stack(windows)


def test_metrics_equal_a_hand_computation(text_ckpt):
    got = diagnose_checkpoint(text_ckpt, windows=3, tokens=32)
    ck = load_folder(text_ckpt)
    model, L = ck.model, ck.model.config.n_layer
    ids = _hand_windows(ck.data["shard_dir"], 32, 3)
    assert got["windows"] == 3 and got["tokens"] == 32 and got["split"] == "valid"
    assert got["first_token_ids"] == ids[:, 0].tolist()
    outs = [model(w[None], return_internals=True) for w in ids]
    with torch.no_grad():
        for layer in range(L):
            v0, vj, a0 = [], [], []
            mean_a = np.zeros((32, 32))
            for out in outs:
                v = out.values[layer][0].double().numpy()  # [Hkv, T, hd]
                probs = out.attention[layer][0].double().numpy()  # [H, T, T]
                for head in range(v.shape[0]):
                    v0.append(np.sqrt((v[head, 0] ** 2).sum()))
                    vj.append(np.mean([np.sqrt((v[head, j] ** 2).sum()) for j in range(1, 32)]))
                for head in range(probs.shape[0]):
                    a0.append(np.mean([probs[head, i, 0] for i in range(32)]))
                    mean_a += probs[head] / (probs.shape[0] * len(outs))
            assert got["first_token_value_norm"][layer] == pytest.approx(np.mean(v0), rel=1e-5)
            assert got["other_token_value_norm"][layer] == pytest.approx(np.mean(vj), rel=1e-5)
            assert got["first_token_value_ratio"][layer] == pytest.approx(np.mean(v0) / np.mean(vj), rel=1e-5)
            assert got["first_token_attention"][layer] == pytest.approx(np.mean(a0), rel=1e-5)
            col = mean_a.sum(0) / mean_a.sum()
            entropy = -(col * np.log(col)).sum()
            assert got["entropy"][layer] == pytest.approx(entropy, rel=1e-6)
            assert got["entropy_normalised"][layer] == pytest.approx(entropy / uniform_causal_entropy(32), rel=1e-6)
        assert len(got["hidden_norm"]) == len(got["token_similarity"]) == L + 1
        for depth in range(L + 1):
            norms = [out.hidden_states[depth][0].double().norm(dim=-1).mean() for out in outs]
            assert got["hidden_norm"][depth] == pytest.approx(float(np.mean(norms)), rel=1e-6)
    assert got["shortcut"] is None  # a plain model has no depth map
    assert got["config"]["shortcut"] == "none"


def test_svformer_value_norms_repeat_layer_one(sv_ckpt):
    got = diagnose_checkpoint(sv_ckpt, windows=2, tokens=16)
    first, other = got["first_token_value_norm"], got["other_token_value_norm"]
    assert len(first) == 3
    assert first[1] == first[0] and first[2] == first[0]
    assert other[1] == other[0] and other[2] == other[0]
    # the attention itself differs per layer, so the entropies do too
    assert len(set(got["entropy"])) == 3


@pytest.mark.parametrize("which", ["depth", "full", "last_layer"])
def test_shortcut_depth_map_rows_sum_to_one(which, request):
    folder = request.getfixturevalue({"depth": "text_ckpt_b", "full": "full_ckpt",
                                      "last_layer": "last_layer_ckpt"}[which])
    got = diagnose_checkpoint(folder, windows=2, tokens=24)
    sc = got["shortcut"]
    cfg = load_folder(folder).model.config
    assert sc["mode"] == which and sc["depths"] == cfg.depths
    depth_map = np.asarray(sc["depth_map"])
    assert depth_map.shape == (24, len(cfg.depths))
    np.testing.assert_allclose(depth_map.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(sum(sc["depth_weights"]), 1.0, atol=1e-5)
    assert np.asarray(sc["depth_weights_per_head"]).shape == (cfg.sc_heads, len(cfg.depths))
    assert len(sc["depth_map_token_ids"]) == len(sc["depth_map_tokens"]) == 24
    assert len(got["entropy"]) == cfg.n_layer and all(math.isfinite(e) for e in got["entropy"])


def test_several_streams_take_the_window_as_the_model_does():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, n_layer=2, n_head=2, n_embd=16, block_size=16, n_streams=3,
                          shortcut="depth", value_residual="resformer"))
    ids = torch.randint(0, 40, (2, 3, 12))
    got = diagnose_model(model, ids)
    assert got["tokens"] == 12 and got["windows"] == 2
    with torch.no_grad():
        hand = np.mean([float(model(ids[w:w + 1], return_internals=True).attention[1][0][:, :, 0].mean())
                        for w in range(2)])
    assert got["first_token_attention"][1] == pytest.approx(hand)
    assert np.asarray(got["shortcut"]["depth_map"]).shape == (12, 2)
    with pytest.raises(ValueError, match="streams"):
        diagnose_model(model, ids[:, 0])


def test_windows_skip_padding_and_stop_at_the_split(text_data):
    pad = load_tokenizer(text_data / "tokenizer").pad_id
    windows, split = validation_windows(text_data, 64, 50, "valid", pad_id=pad)
    assert split == "valid" and windows.shape == (7, 65)  # 458 tokens: 7 full windows, the 8th padded
    windows, split = validation_windows(text_data, 64, 2, "nonexistent", pad_id=pad)
    assert split == "test" and windows.shape == (2, 65)
    assert not (windows[:, :-1] == pad).any()
    # no full window: the first, cut before its padding (EOS doc EOS = 460 inputs)
    one, _ = validation_windows(text_data, 1000, 3, "valid", pad_id=pad)
    assert one.shape[0] == 1 and one.shape[-1] == 461 and not (one[:, :-1] == pad).any()


def test_compare_checkpoints_writes_json_and_plots(tmp_path, text_ckpt, text_ckpt_b, sv_ckpt, full_ckpt):
    done = compare_checkpoints([text_ckpt, text_ckpt_b, sv_ckpt, full_ckpt], tmp_path / "diag",
                               labels=["baseline", "resformer+depth", "svformer", "full"], windows=2, tokens=16)
    body = json.loads(done["json"].read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert list(body["results"]) == ["baseline", "resformer+depth", "svformer", "full"]
    assert body["results"]["baseline"]["shortcut"] is None
    for name in ("entropy", "first_token_value_norm", "first_token_attention", "hidden_norm", "token_similarity",
                 "depth_weights"):
        assert done["plots"][name] == tmp_path / "diag" / f"{name}.png"
    for png in ("depth_map_resformer_depth.png", "depth_map_full.png"):
        assert (tmp_path / "diag" / png).is_file()
    assert not (tmp_path / "diag" / "depth_map_baseline.png").exists()
    for path in done["plots"].values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="labels"):
        compare_checkpoints([text_ckpt], tmp_path / "x", labels=["a", "b"])


def test_cli_and_report_entry_point(tmp_path, text_ckpt, text_ckpt_b, capsys):
    rc = cli_main(["diagnose", str(text_ckpt), str(text_ckpt_b), "--out", str(tmp_path / "cli"), "--windows", "1",
                   "--tokens", "8", "--labels", "a,b"])
    assert rc == 0
    body = json.loads((tmp_path / "cli" / "diagnostics.json").read_text())
    assert body["results"]["a"]["tokens"] == 8 and body["results"]["b"]["windows"] == 1
    assert (tmp_path / "cli" / "depth_map_b.png").is_file()
    assert "wrote" in capsys.readouterr().out
    assert cli_main(["diagnose", str(tmp_path / "missing"), "--out", str(tmp_path / "e")]) == 2
    # report.py's call keeps working
    assert depth_map_for_checkpoint(text_ckpt, None, tmp_path / "m.png") is None
    png = depth_map_for_checkpoint(text_ckpt_b, None, tmp_path / "m.png")
    assert png.is_file() and (tmp_path / "m.json").is_file()


# ------------------------------------------------------------------------------------ labels, colours, colour bars

def same_variant_copies(src, root, variant="baseline", folders=("run_a", "run_b")) -> list:
    """Copies of a checkpoint whose recipes all name one variant (two runs of one recipe variant)."""
    from shortcutlm.artifacts.checkpoint import save_folder

    ck = load_folder(src)
    return [save_folder(root / name, ck.model, {"variant": variant}, ck.hparams, ck.folder / "tokenizer", ck.data)
            for name in folders]


def test_checkpoint_labels_rule():
    from shortcutlm.run.evaluation import checkpoint_labels

    assert checkpoint_labels(["baseline", "svformer"], ["x/run_a", "x/run_b"]) == ["baseline", "svformer"]
    assert checkpoint_labels(["baseline", "baseline", "svformer"], ["x/run_a", "y/run_b", "z/run_c"]) == \
        ["baseline (run_a)", "baseline (run_b)", "svformer"]
    assert checkpoint_labels(["b", "b"], ["x/run", "y/run"]) == ["b (x/run)", "b (y/run)"]
    assert checkpoint_labels(["b", "b"], ["x/run", "x/run"]) == ["b (x/run) #1", "b (x/run) #2"]


def test_diagnose_labels_checkpoints_as_evaluation_does(tmp_path, text_ckpt, text_ckpt_b, capsys, monkeypatch):
    from shortcutlm.drawing import plots
    from shortcutlm.run.evaluation import evaluate_checkpoints
    from shortcutlm.drawing.plots import variant_colour

    run_a, run_b = same_variant_copies(text_ckpt_b, tmp_path)
    figures = []
    real_save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, out: figures.append((Path(out).name, fig)) or real_save(fig, out))
    assert cli_main(["diagnose", str(run_a), str(run_b), str(text_ckpt), "--out", str(tmp_path / "d"),
                     "--windows", "1", "--tokens", "8"]) == 0
    expected = ["baseline (run_a)", "baseline (run_b)", "text_a"]
    body = json.loads((tmp_path / "d" / "diagnostics.json").read_text())
    assert list(body["results"]) == expected
    table = capsys.readouterr().out.splitlines()
    assert [line.split(" | ")[0] for line in table[1:4]] == expected
    for png in ("depth_map_baseline_run_a.png", "depth_map_baseline_run_b.png"):
        assert (tmp_path / "d" / png).is_file()
    # the same names in evaluation's tables
    rows = evaluate_checkpoints([run_a, run_b, text_ckpt], max_batches=1, progress=False).checkpoints
    assert [r.name for r in rows] == expected

    # plots: legends carry the labels; a variant is drawn in its colour, a second run of it in another
    figs = dict(figures)
    lines = {line.get_label(): line.get_color() for line in figs["hidden_norm.png"].axes[0].get_lines()}
    assert set(expected) <= set(lines)
    assert lines["baseline (run_a)"] == variant_colour("baseline")
    assert lines["text_a"] == variant_colour("text_a")
    assert len({lines[label] for label in expected}) == 3
    # depth maps: the colour bar says what the colours measure
    bar = figs["depth_map_baseline_run_a.png"].axes[-1]
    assert bar.get_ylabel() == DEPTH_MAP_COLORBAR and "attention" in bar.get_ylabel()


def test_report_depth_map_has_a_labelled_colour_bar(tmp_path, text_ckpt_b, monkeypatch):
    from shortcutlm.drawing import plots

    figures = []
    real_save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, out: figures.append(fig) or real_save(fig, out))
    assert depth_map_for_checkpoint(text_ckpt_b, None, tmp_path / "m.png").is_file()
    assert figures[-1].axes[-1].get_ylabel() == DEPTH_MAP_COLORBAR

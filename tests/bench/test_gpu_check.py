"""``shortcutlm bench gpu --dry-run``: the GPU check's CPU-safe parts run at tiny sizes and write a
JSON that names the device and has every section, with figures or an explicit skip."""
from __future__ import annotations

import json

import pytest
import torch

from shortcutlm.bench import gpu
from shortcutlm.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the dry run's skips are those of a machine without CUDA")
def test_dry_run_writes_every_section_with_figures_or_a_reason(tmp_path, capsys):
    assert main(["bench", "gpu", "--dry-run", "--out", str(tmp_path)]) == 0
    check = json.loads((tmp_path / "check.json").read_text())
    assert check["dry_run"] is True
    assert check["device"]["type"] == "cpu" and check["device"]["name"]
    sections = check["sections"]
    assert set(sections) == {s.name for s in gpu.SECTIONS}
    for s in gpu.SECTIONS:
        status = sections[s.name]["status"]
        assert status == (gpu.SKIPPED if s.needs_cuda else "ok"), (s.name, sections[s.name])
    # The CPU-safe sections carry figures, each in its own JSON beside check.json.
    assert set(sections["mfu"]["results"]) == {"fp32", "bf16"}
    assert sections["mfu"]["results"]["fp32"]["tokens_per_second"] > 0
    for name in ("mfu", "model", "decode", "loader"):
        assert json.loads((tmp_path / sections[name]["json"]).read_text())
    decode = sections["decode"]["results"]
    assert {"fp32", "bf16"} <= set(decode) and all(0 < r["share_of_bound"] for r in decode.values())
    assert sections["loader"]["loader"]["tokens_per_s"] > 0
    assert "loader_over_training" in check["targets"]
    assert "batch1_decode_share_of_weight_read_bound" in check["targets"]
    assert all(t["pass"] is None and t["note"] == gpu.DRY_RUN_NOTE for t in check["targets"].values())
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"all figures: {tmp_path / 'check.json'}"


def test_without_cuda_the_real_check_refuses_and_names_the_dry_run(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="--dry-run"):
        main(["bench", "gpu"])


def test_sections_past_the_time_budget_are_skipped_and_say_why(tmp_path):
    assert main(["bench", "gpu", "--dry-run", "--budget-s", "0", "--out", str(tmp_path)]) == 0
    sections = json.loads((tmp_path / "check.json").read_text())["sections"]
    assert {s.name: sections[s.name]["status"] for s in gpu.SECTIONS} == {
        s.name: gpu.SKIPPED if s.needs_cuda else gpu.OUT_OF_TIME for s in gpu.SECTIONS}


def test_a_real_run_starts_each_command_in_a_fresh_process_with_a_time_limit(tmp_path):
    check = gpu.Check(tmp_path, dry_run=False, device="cpu", size=gpu.TINY)
    ran = check.command(["bench", "--help"], timeout_s=120)
    assert ran["returncode"] == 0 and "mfu" in ran["output_tail"]
    assert ran["command"] == "shortcutlm bench --help"
    slow = check.command(["bench", "--help"], timeout_s=0.01)
    assert slow["returncode"] == 124 and slow["output_tail"].startswith("timed out")

"""The installed torch and torchaudio work together (the fresh-install failure the lock prevents)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from shortcutlm.core.environment import EnvironmentProblem, check_torch_pair


def test_torch_and_torchaudio_compiled_parts_load_together():
    try:
        check_torch_pair()
    except EnvironmentProblem as err:
        pytest.fail(str(err), pytrace=False)
    import torch
    import torchaudio.functional as AF

    # A call into the compiled code, not only the import.
    assert AF.resample(torch.ones(1, 300), 24_000, 16_000).shape == (1, 200)


def test_a_broken_pair_is_one_actionable_line(tmp_path):
    """A torchaudio whose library fails to load (as 2.11.1 does beside torch 2.11.0) gives one line."""
    fake = tmp_path / "torchaudio"
    (fake / "_extension").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "_extension" / "__init__.py").write_text(
        "raise OSError('libtorchaudio.so: undefined symbol:\\n torch_exception_get_what_without_backtrace')\n")
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from shortcutlm.core.environment import check_torch_pair, EnvironmentProblem
        try:
            check_torch_pair()
        except EnvironmentProblem as err:
            print(err)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert "undefined symbol: torch_exception_get_what_without_backtrace" in lines[0]
    assert "pip install torch==2.11.0 torchaudio==2.11.0" in lines[0] and "make venv" in lines[0]


def test_the_lock_installs_the_pair_that_pyproject_and_the_message_name():
    """pyproject.toml, requirements.lock and the error message agree on one exact torch pair."""
    import re
    import tomllib
    from pathlib import Path

    from shortcutlm.core.environment import PINNED_PAIR

    deps = tomllib.loads(Path("pyproject.toml").read_text())["project"]["dependencies"]
    pinned = sorted(d for d in deps if re.match(r"torch(audio)?==", d))
    assert pinned == sorted(PINNED_PAIR.split()), "pin torch and torchaudio to exact versions"
    lock = Path("requirements.lock").read_text()
    for requirement in pinned:
        assert re.search(rf"^{re.escape(requirement)}\b", lock, re.M), f"{requirement} missing from requirements.lock"

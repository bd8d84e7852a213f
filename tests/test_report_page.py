"""The HTML pages checked as a person would: opened from disk in a real headless Chromium, every player
and picture loads, each player lasts as long as its file, one section per variant, a screenshot.

The browser is Debian's ``chromium`` driven through ``chromedriver`` (``tests/browser.py``); without
them the browser tests skip and say so. The other tests read the pages as files.
"""
from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import soundfile as sf

from shortcutlm.artifacts.ablation import PAGE_HTML, PAGE_MD
from shortcutlm.drawing.sample_pictures import piano_roll_figure, spectrogram_figure
from shortcutlm.tokenizers import tokenizer_class
from tests.browser import Browser, find_browser
from tests.conftest import tiny_recipe_dict
from tests.pages import html_numbers, markdown_numbers, markdown_tables, read_html

DOCS = Path(__file__).resolve().parents[1] / "docs"
VARIANTS = ["baseline", "shortcut_resformer"]
#: run fixture -> (audio players: the prompt and one per variant; sample pictures; texts with a prompt part)
RUNS = {"midi_run": (3, 2, 0), "audio_run": (3, 2, 0), "text_run": (0, 0, 2)}

COUNT_SCRIPT = """return {pictures: document.querySelectorAll('section.variant .sample img').length,
  texts: [...document.querySelectorAll('section.variant .text-sample')].filter(
           t => t.querySelector('.prompt') && t.querySelector('.prompt').textContent.trim()
                && t.querySelector('.continuation').textContent.trim()).length,
  height: document.documentElement.scrollHeight};"""


@pytest.fixture(scope="session")
def browser():
    found = find_browser()
    if found is None:
        pytest.skip("no headless browser found: install Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver) to check the HTML pages in a browser")
    with Browser(*found) as opened:
        yield opened


def local_file(page: Path, link: str) -> Path:
    """The file a relative link of ``page`` names."""
    return (page.parent / unquote(urlparse(link).path)).resolve()


def assert_offline(page: Path) -> None:
    """Every link of the page is relative and names a file inside the page's folder."""
    for link in read_html(page.read_text(encoding="utf-8")).links:
        if link.startswith("#"):
            continue
        parsed = urlparse(link)
        assert not parsed.scheme and not parsed.netloc and not link.startswith("/"), f"not a relative link: {link}"
        target = local_file(page, link)
        assert target.is_file(), f"{page.name} links to a missing file: {link}"
        assert target.is_relative_to(page.parent.resolve()), f"{link} leaves the page's folder"


def check_in_browser(browser: Browser, page: Path, screenshot: Path) -> dict:
    """Open ``page`` from disk: no broken picture, every player as long as its file; returns what loaded."""
    browser.open(page)
    got = browser.media()
    assert got["images"], "no picture on the page"
    broken = [i["src"] for i in got["images"] if not i["ok"]]
    assert not broken, f"pictures that did not load: {broken}"
    for audio in got["audio"]:
        assert audio["error"] is None, f"{audio['src']} did not load (MediaError {audio['error']})"
        seconds = sf.info(str(local_file(page, audio["src"]))).duration
        assert audio["duration"] == pytest.approx(seconds, abs=0.05), audio["src"]
    shot = browser.screenshot(screenshot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    print(f"screenshot of {page}: {shot}", file=sys.stderr)
    return got


@pytest.mark.slow
@pytest.mark.parametrize("run", list(RUNS))
def test_the_run_report_plays_and_shows_every_sample_in_a_browser(run, request, browser, tmp_path):
    layout = request.getfixturevalue(run)
    players, pictures, texts = RUNS[run]
    got = check_in_browser(browser, layout.report_html, tmp_path / f"{run}.png")
    assert got["variants"] == VARIANTS  # one section per variant, in the recipe's order
    assert len(got["audio"]) == players
    if players:  # the prompt's own player comes first, then each variant's continuation
        assert got["audio"][0]["src"].startswith("samples/prompt/")
        assert [a["src"].split("/")[1] for a in got["audio"][1:]] == VARIANTS
    counted = browser.run(COUNT_SCRIPT)
    assert counted["pictures"] == pictures and counted["texts"] == texts


@pytest.mark.slow
@pytest.mark.parametrize("run", list(RUNS))
def test_the_run_report_works_from_disk_alone(run, request):
    layout = request.getfixturevalue(run)
    assert_offline(layout.report_html)
    page = layout.report_html.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page  # nothing fetched from a network
    for section in ("evaluation", "training", "depth", "diagnostics", "data"):
        assert f'<section id="{section}">' in page
    # The readings of report.md are on the page, set off beside their plots and tables.
    readings = [line for line in layout.report.read_text().splitlines() if line.startswith("Reading:")]
    assert len(readings) >= 4 and page.count('<p class="reading">') == len(readings)
    # The same numbers as report.md in every table (the HTML tables are its tables; the samples come first).
    assert sorted(read_html(page).tables) == sorted(markdown_tables(layout.report.read_text()))


@pytest.mark.slow
def test_the_recipe_command_names_the_html_report_last(midi_run, capsys, tmp_path):
    import yaml

    from shortcutlm.cli import main

    recipe = tmp_path / "recipe.yaml"  # the run's recipe: only its report stage runs, on the run's folder
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict({"name": "bach_chorales", "limit": 8}, {"domain": "midi"})))
    assert main(["recipe", str(recipe), "--stage", "report", "--out", str(midi_run.root), "--no-progress"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert str(midi_run.report_html) in last and "report.html" in last


ABLATION_PAGES = pytest.mark.parametrize("docs", [DOCS, DOCS / "deep", DOCS / "multimodal"],
                                         ids=["ablation", "deep", "sharing"])


@ABLATION_PAGES
def test_the_ablation_page_in_html_has_the_numbers_of_the_markdown_page(docs):
    md, page = (docs / PAGE_MD).read_text(encoding="utf-8"), (docs / PAGE_HTML).read_text(encoding="utf-8")
    assert read_html(page).tables == markdown_tables(md) and len(markdown_tables(md)) >= 4
    assert html_numbers(page) == markdown_numbers(md) and len(markdown_numbers(md)) > 100
    assert_offline(docs / PAGE_HTML)


@ABLATION_PAGES
def test_the_ablation_page_loads_every_figure_in_a_browser(browser, tmp_path, docs):
    got = check_in_browser(browser, docs / PAGE_HTML, tmp_path / "results.png")
    assert len(got["images"]) == (docs / PAGE_MD).read_text().count("![")


# ------------------------------------------------------------------------------------ the pictures

def test_the_piano_roll_shades_the_prompt_and_draws_every_note():
    starts, durations, pitches = (np.array([0.0, 1.0, 3.0, 4.5]), np.array([1.0, 0.5, 1.0, 0.5]),
                                  np.array([60, 64, 67, 72]))
    fig = piano_roll_figure(starts, durations, pitches, prompt_seconds=2.0, title="x")
    ax = fig.axes[0]
    bars = [p for p in ax.patches if p.get_height() == pytest.approx(0.8)]
    assert sorted((b.get_x(), b.get_width()) for b in bars) == [(0.0, 1.0), (1.0, 0.5), (3.0, 1.0), (4.5, 0.5)]
    grey, blue = {b.get_facecolor() for b in bars if b.get_x() < 2}, {b.get_facecolor() for b in bars if b.get_x() > 2}
    assert len(grey) == len(blue) == 1 and grey != blue  # the prompt's notes apart from the continuation's
    shades = [p for p in ax.patches if p not in bars]
    assert len(shades) == 1 and shades[0].get_x() == 0 and shades[0].get_width() == pytest.approx(2.0)
    assert [line.get_xdata()[0] for line in ax.lines] == [2.0]
    assert ax.get_xlim()[1] >= 5.0 and ax.get_ylim() == (58, 74)


def test_the_spectrogram_marks_the_join_and_spans_the_sound():
    rate = 8000
    t = np.arange(2 * rate) / rate
    wave = np.where(t < 1.2, np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 2000 * t))
    fig = spectrogram_figure(wave, rate, join_seconds=1.2)
    ax = fig.axes[0]
    assert [line.get_xdata()[0] for line in ax.lines] == [1.2]
    assert ax.get_xlim() == pytest.approx((0, 2.0)) and ax.get_ylim() == pytest.approx((0, rate / 2000))  # kHz
    image = ax.images[0].get_array()  # row k: k / (rows - 1) of rate / 2
    rows = image.shape[0]
    before, after = image[:, : image.shape[1] // 3], image[:, -image.shape[1] // 3:]
    # The loudest band is the prompt's tone before the join and the continuation's after it.
    assert abs(int(np.argmax(before.mean(axis=1))) - round(440 / (rate / 2) * (rows - 1))) <= 1
    assert abs(int(np.argmax(after.mean(axis=1))) - round(2000 / (rate / 2) * (rows - 1))) <= 1


def test_each_domain_draws_its_own_picture(midi_files, wav_folder, tmp_path):
    midi, audio, text = (tokenizer_class(d) for d in ("midi", "acoustic", "text"))
    roll = midi.picture(midi_files[0], tmp_path / "roll.png", prompt_seconds=2.0, title="roll")
    wav = sorted(Path(wav_folder).rglob("*.wav"))[0]
    spectrogram = audio.picture(wav, tmp_path / "spec.png", prompt_seconds=0.5)
    assert roll.read_bytes()[:4] == spectrogram.read_bytes()[:4] == b"\x89PNG"
    assert text.picture(tmp_path / "a.txt", tmp_path / "text.png") is None and not (tmp_path / "text.png").exists()
    assert audio.artifact_is_sound and not midi.artifact_is_sound and not text.artifact_is_sound


def test_a_text_sample_sets_its_prompt_apart(tmp_path):
    text = tokenizer_class("text")
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("The king  and\nqueen of music")
    sample = tmp_path / "sample.txt"
    sample.write_text("The king and queen of music speak in layered verse")  # decoding laid out the spaces anew
    assert text.text_parts(sample, prompt) == ("The king and queen of music", " speak in layered verse")
    assert text.text_parts(sample, None) == ("", "The king and queen of music speak in layered verse")
    assert text.text_parts(sample, prompt, chars=6) == ("The king and queen of music", " speak…")
    prompt.write_text("The king sings")  # the model's text leaves the prompt's at "sings": split there
    assert text.text_parts(sample, prompt) == ("The king", " and queen of music speak in layered verse")
    for domain in ("midi", "acoustic"):
        assert tokenizer_class(domain).text_parts(sample, prompt) is None

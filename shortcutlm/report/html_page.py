"""One self-contained HTML page: a style sheet inside it, Markdown turned into HTML, text escaped.

Reports are read on a laptop from a copied folder, often with no network: the page fetches
nothing (no web fonts, no scripts from a CDN) and links only to files beside it, by relative path.
The Markdown the reports already write is converted with python-markdown, so the HTML page shows
the very same tables and sentences as the ``.md`` beside it.
"""
from __future__ import annotations

import html
import re

import markdown

STYLE = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa; --prompt: #eceff3; }
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1280px; padding: 0 24px 48px; }
header { border-bottom: 1px solid var(--line); margin-bottom: 8px; }
h1 { font-size: 1.8em; margin: 24px 0 6px; }
h2 { font-size: 1.35em; border-bottom: 1px solid var(--line); padding-bottom: 4px; margin-top: 36px; }
h3 { font-size: 1.1em; margin: 20px 0 8px; }
nav { margin: 8px 0 12px; font-size: 0.95em; }
nav a { margin-right: 14px; }
a { color: #0969da; text-decoration: none; }
a:hover { text-decoration: underline; }
code { font: 0.88em ui-monospace, Menlo, Consolas, monospace; background: var(--soft); padding: 1px 4px;
       border-radius: 4px; }
pre { background: var(--soft); padding: 10px 12px; border-radius: 6px; overflow-x: auto; }
pre code { background: none; padding: 0; }
table { border-collapse: collapse; margin: 10px 0; font-size: 0.92em; display: block; overflow-x: auto; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: var(--soft); }
td:not(:first-child) { font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; }
p img { display: block; margin: 8px 0; max-width: min(100%, 960px); max-height: 560px; width: auto;
        border: 1px solid var(--line); border-radius: 4px; }
.muted { color: var(--muted); font-size: 0.92em; }
.reading { background: #fff8e6; border-left: 4px solid #e3b341; padding: 6px 10px; border-radius: 4px; }
.prompt-block { background: var(--soft); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px;
                margin: 10px 0 16px; }
.variants { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 16px; }
section.variant { border: 1px solid var(--line); border-top-width: 6px; border-radius: 8px; padding: 4px 14px 12px;
                  min-width: 0; }
section.variant h3 { margin-top: 10px; }
.sample { margin: 8px 0 14px; }
.sample + .sample { border-top: 1px dashed var(--line); padding-top: 10px; }
audio { width: 100%; margin: 4px 0; }
.player-label { font-size: 0.85em; color: var(--muted); margin-top: 6px; }
.text-sample { white-space: pre-wrap; font: 0.9em/1.45 ui-monospace, Menlo, Consolas, monospace;
               background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px;
               max-height: 26em; overflow-y: auto; }
.text-sample .prompt { background: var(--prompt); color: var(--muted); border-radius: 3px; }
.text-sample .prompt::before { content: "prompt ▸ "; font-weight: 600; font-style: normal; }
.text-sample .continuation::before { content: " ◂ continuation ▸ "; color: #0969da; font-weight: 600; }
.legend { font-size: 0.85em; color: var(--muted); }
"""

#: python-markdown's extensions the reports' Markdown uses: pipe tables, fenced code, heading ids.
EXTENSIONS = ["tables", "fenced_code", "toc"]


def esc(text: object) -> str:
    """``text`` escaped for HTML text and attribute values."""
    return html.escape(str(text), quote=True)


#: A paragraph of the reports' Markdown that starts with this reads the plot or table above it.
READING = "Reading:"


def markdown_html(text: str) -> str:
    """The HTML of a Markdown text (tables, fenced code, ids on headings; links kept as written), its
    readings (paragraphs that start with :data:`READING`) set off and each picture a link to itself at full size."""
    converted = markdown.markdown(text, extensions=EXTENSIONS, output_format="html")
    converted = re.sub(r'<img ([^>]*?)src="([^"]+)"([^>]*)>', r'<a href="\2"><img \1src="\2"\3></a>', converted)
    return converted.replace(f"<p>{READING}", f'<p class="reading">{READING}')


def document(title: str, body: str) -> str:
    """A complete HTML document around ``body`` (already HTML), with the inline style sheet."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def markdown_page(text: str, title: str) -> str:
    """A Markdown document as one HTML page (its own ``# title`` line stays its heading)."""
    return document(title, markdown_html(text))

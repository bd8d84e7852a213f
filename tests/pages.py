"""Reading an HTML page and the Markdown it was made from back as text, tables, numbers and links,
so that tests can compare the two pages and check what a page points to."""
from __future__ import annotations

import re
from html.parser import HTMLParser

NUMBER = re.compile(r"[-+−]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")


class _Reader(HTMLParser):
    """Visible text, tables (rows of cell texts) and every ``src``/``href`` of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.links: list[str] = []
        self._skip = 0
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value for name, value in attrs if name in ("src", "href") and value]
        if tag in ("style", "script", "title"):
            self._skip += 1
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "title"):
            self._skip -= 1
        elif tag in ("td", "th") and self._cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def read_html(page: str) -> _Reader:
    reader = _Reader()
    reader.feed(page)
    return reader


def markdown_tables(text: str) -> list[list[list[str]]]:
    """The pipe tables of a Markdown text as rows of cell texts (emphasis and escapes removed)."""
    tables: list[list[list[str]]] = []
    previous = False
    for line in text.splitlines():
        is_row = line.startswith("|")
        if is_row and not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line):
            if not previous:
                tables.append([])
            cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
            tables[-1].append([" ".join(_plain(c).split()) for c in cells])
        previous = is_row
    return tables


def _plain(markdown: str) -> str:
    """Markdown inline text as it reads: images dropped, links to their text, no emphasis or code marks."""
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", markdown)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return text.replace("\\|", "|").replace("**", "").replace("`", "")


def markdown_numbers(text: str) -> list[str]:
    """Every number a reader of the Markdown sees, in order."""
    return NUMBER.findall(_plain(text))


def html_numbers(page: str) -> list[str]:
    """Every number a reader of the HTML page sees, in order."""
    return NUMBER.findall("".join(read_html(page).text))

"""Renders a study folder (sections.json, tables/, figures/) as one self-contained HTML file."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from ..analysis import Table

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em} h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;
margin-top:2em} .guide{background:#f4f6f8;border-left:4px solid #7a9cc6;padding:.6em .9em;
font-size:.92em} table{border-collapse:collapse;font-size:.82em;margin:.8em 0}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right} th{background:#eef}
td:first-child,th:first-child{text-align:left} img{max-width:100%;margin:.5em 0}
.scroll{max-height:420px;overflow:auto} .caption{font-size:.85em;color:#555}
nav a{margin-right:.8em;font-size:.9em} li{margin:.3em 0}
"""


def _inside(out_dir: Path, entry: object, what: str) -> Path:
    """The file `out_dir / entry`, refusing any path that leaves the study folder."""
    if not isinstance(entry, str) or not entry:
        raise ValueError(f"sections.json: a {what} entry is {entry!r}, not a relative path.")
    root = out_dir.resolve()
    path = (out_dir / entry).resolve()
    if not path.is_relative_to(root) or Path(entry).is_absolute():
        raise ValueError(
            f"sections.json names the {what} {entry!r}, which lies outside the study folder "
            f"{out_dir}; only files inside it are embedded. Fix or regenerate sections.json."
        )
    if not path.is_file():
        raise FileNotFoundError(f"sections.json names the {what} {entry!r}, missing in {out_dir}.")
    return path


def _anchor(key: object) -> str:
    """A section key as an HTML id: letters, digits, '-' and '_' kept, others '_'."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in str(key))


_SECTION_FIELDS = {"key": str, "title": str, "guide": str, "tables": list, "figures": list}


def _read_sections(index: Path) -> list[dict]:
    """The sections of `sections.json`, checked field by field."""
    fix = "Regenerate it with `captum-layerinf run` (finished stages are read, not recomputed)."
    try:
        sections = json.loads(index.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{index} is not valid JSON ({e}). {fix}") from e
    if not isinstance(sections, list):
        raise ValueError(f"{index} must hold a list of sections. {fix}")
    for i, s in enumerate(sections):
        bad = [
            k
            for k, t in _SECTION_FIELDS.items()
            if not isinstance(s, dict) or not isinstance(s.get(k), t)
        ]
        if bad:
            raise ValueError(f"{index}: section {i} lacks or mangles the field(s) {bad}. {fix}")
    return sections


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _table(path: Path) -> str:
    table = Table.load(path)
    body = table.to_html()
    if len(table.rows) > 20:
        body = f'<div class="scroll">{body}</div>'
    caption = f'<p class="caption">{html.escape(table.caption)}</p>' if table.caption else ""
    return f"<h3>{html.escape(table.title)}</h3>{body}{caption}"


def write_report(out_dir: str | Path, title: str = "Disturbance study") -> Path:
    """Writes `out_dir/report.html` from the study's sections, tables and figures.

    Figures are embedded (base64 PNG) so the file can be moved or mailed on its own.

    Args:
        out_dir: A study folder written by `DisturbanceStudy.run`.
        title: Heading of the report.

    Returns:
        The report's path.
    """
    out_dir = Path(out_dir)
    index = out_dir / "sections.json"
    if not index.is_file():
        raise FileNotFoundError(
            f"{index} not found: {out_dir} is not a finished study run. Run "
            "`captum-layerinf run CONFIG.json --out DIR` (or `demo`) first."
        )
    sections = _read_sections(index)
    config = out_dir / "config.json"
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        "<nav>"
        + "".join(
            f'<a href="#{_anchor(s["key"])}">{html.escape(str(s["title"]).split(":")[0])}</a>'
            for s in sections
        )
        + "</nav>",
    ]
    for s in sections:
        parts.append(f'<section id="{_anchor(s["key"])}"><h2>{html.escape(str(s["title"]))}</h2>')
        parts.append(f'<p class="guide">{html.escape(str(s["guide"]))}</p>')
        if s.get("findings"):
            parts.append(
                "<ul>" + "".join(f"<li>{html.escape(str(f))}</li>" for f in s["findings"]) + "</ul>"
            )
        parts += [_table(_inside(out_dir, t, "table")) for t in s["tables"]]
        parts += [_figure(_inside(out_dir, f, "figure")) for f in s["figures"]]
        parts.append("</section>")
    if config.is_file():
        parts.append(
            "<section id='config'><h2>Configuration</h2><pre>"
            + html.escape(config.read_text())
            + "</pre></section>"
        )
    parts.append("</body></html>")
    path = out_dir / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path

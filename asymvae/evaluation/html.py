"""The evaluation report as one self-contained HTML page: the metrics table and the grid picture inline.

Kubeflow's UI shows an HTML artifact in a sandboxed frame that cannot fetch other files, so the grid is
embedded as a base64 PNG data URI.
"""

from __future__ import annotations

import base64
import html
import re

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`(.+?)`")


def _inline(text: str) -> str:
    out = html.escape(text)
    out = _BOLD.sub(r"<strong>\1</strong>", out)
    return _CODE.sub(r"<code>\1</code>", out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_to_html(markdown: str) -> str:
    """HTML for the subset of Markdown `asymvae eval` writes: one pipe table, then paragraphs."""
    parts: list[str] = []
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    if rows:
        head, body = _cells(rows[0]), [r for r in rows[1:] if not set(r) <= set("|-: ")]
        parts.append("<table>")
        parts.append("<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>")
        for row in body:
            parts.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in _cells(row)) + "</tr>")
        parts.append("</table>")
    for line in markdown.splitlines():
        if line.strip() and not line.startswith("|"):
            parts.append(f"<p>{_inline(line)}</p>")
    return "\n".join(parts)


def html_report(markdown: str, grid_png: bytes | None, title: str = "asymvae evaluation") -> str:
    """A standalone HTML page: `title`, the table from `markdown`, and `grid_png` inline when given."""
    picture = ""
    if grid_png:
        data = base64.b64encode(grid_png).decode("ascii")
        picture = (
            '<img alt="per sample: baseline, asymmetric with the mask, asymmetric with a full mask; decoding, error, '
            f'zoom" src="data:image/png;base64,{data}">\n'
            "<p>Per sample three rows: the baseline's plain decoding, the asymmetric decoding with the mask, and "
            "with a full mask (the whole image generated). Columns: what the mask branch sees, the decoding, its "
            "absolute error (the scale is in the picture's header: the 99th percentile of the errors shown), and a "
            "zoomed preserved region of the input beside the decoding's. Each row's label gives that sample's "
            "pre_error and PSNR. Cyan: the hole's edge; green: the zoomed region.</p>"
        )
    style = (
        "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}img{image-rendering:pixelated;max-width:100%}"
    )
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head>\n<body>\n<h2>{html.escape(title)}</h2>\n"
        f"{markdown_to_html(markdown)}\n{picture}\n</body></html>\n"
    )

"""report.html from report.md: the same document, with real tables and the pictures shown.

Renders the small Markdown subset the report writes (``#`` headings, ``| ... |`` tables,
``- `` lists, ``![alt](file)`` pictures, paragraphs, ``**bold**`` and ```code```), so the
HTML can never say something the Markdown does not. A table row holding "FAILED" is red.
"""

from __future__ import annotations

import html
import re

STYLE = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}"
         "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
         "td,th{border:1px solid #bbb;padding:3px 7px;text-align:right;white-space:nowrap}"
         "th{background:#f2f2f2;text-align:left}td:first-child,td:nth-child(2){text-align:left}"
         ".wide{overflow-x:auto}"
         "tr.fail td{color:#b00;font-weight:600}img{max-width:100%;border:1px solid #ddd;margin:.5em 0}"
         "code{background:#f4f4f4;padding:0 3px}li{margin:.2em 0}")


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(lines: list[str]) -> str:
    head, body = _cells(lines[0]), [_cells(ln) for ln in lines[2:]]
    out = ["<div class='wide'><table><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in head) + "</tr>"]
    for cells in body:
        cls = " class='fail'" if any("FAILED" in c for c in cells) else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{_inline(c)}</td>" for c in cells) + "</tr>")
    return "\n".join(out + ["</table></div>"])


def render(markdown: str, title: str) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body>"]
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        ln = lines[i]
        if not ln.strip():
            i += 1
        elif ln.startswith("#"):
            level = len(ln) - len(ln.lstrip("#"))
            parts.append(f"<h{level}>{_inline(ln[level:].strip())}</h{level}>")
            i += 1
        elif ln.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            parts.append(_table(block))
        elif ln.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            parts.append("<ul>" + "".join(items) + "</ul>")
        elif m := re.fullmatch(r"!\[(.*)\]\((.+)\)", ln.strip()):
            alt, src = (html.escape(g, quote=True) for g in m.groups())
            parts.append(f"<p><a href='{src}'><img src='{src}' alt='{alt}'></a></p>")
            i += 1
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|", "- ", "![")):
                para.append(lines[i])
                i += 1
            parts.append(f"<p>{_inline(' '.join(para))}</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"

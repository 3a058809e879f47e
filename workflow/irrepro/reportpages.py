"""HTML pages for the Snakemake report (``make report``): the markdown results as HTML, and
one table of every job's provenance.

``snakemake --report`` embeds images and HTML files; the project's tables are markdown
(``report.md`` with the deviation registry, ``syntod_comparison.md``,
``rerank_significance.md``). :func:`markdown_page` renders one as a standalone HTML page
(markdown-it-py, with tables). :func:`provenance_page` lists the provenance recorded in every
job's run sidecar (:mod:`irrepro.provenance`): git commit and dirty flag per job, and the
software / hardware the jobs ran with (one row per distinct value, with the jobs that saw it),
so a mixed environment (two machines, a dirty tree for some jobs) is visible at a glance.

These pages are views for the report, made by a Snakemake-only rule (``report_pages``) that
``make report`` runs; they are not DVC outputs and may carry dates.
"""

from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from .utils import atomic_path

STYLE = ("body{font-family:system-ui,sans-serif;font-size:14px;margin:1em}table{border-collapse:collapse;"
         "margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}"
         "th{background:#f3f3f3}code{font-size:12px}")


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def markdown_html(text: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def markdown_page(src: str | Path, out: str | Path, title: str) -> None:
    """Render the markdown file ``src`` as the HTML page ``out``; a missing file is an error
    naming it."""
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: missing (run the stage that writes it first)")
    with atomic_path(out) as tmp:
        tmp.write_text(_page(title, markdown_html(src.read_text(encoding="utf-8"))), encoding="utf-8")


def _flatten(doc: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif isinstance(v, list):
            out[f"{prefix}{k}"] = ", ".join(map(str, v)) or "none"
        else:
            out[f"{prefix}{k}"] = v
    return out


def provenance_html(records: Sequence[dict]) -> str:
    """The body of the provenance page for ``records`` (:func:`irrepro.provenance.read_all`)."""
    if not records:
        return "<h1>Provenance</h1><p>No job recorded provenance (run the workflow first).</p>"
    e = html.escape
    jobs = ["<h2>Jobs</h2><table><tr><th>job</th><th>command</th><th>git commit</th><th>dirty</th></tr>"]
    for r in records:
        git = r.get("git") or {}
        dirty = {True: "<b>yes</b>", False: "no"}.get(git.get("dirty"), "unknown")
        jobs.append(f"<tr><td>{e(r['job'])}</td><td>{e(str(r.get('command')))}</td>"
                    f"<td><code>{e(str(git.get('commit')))}</code></td><td>{dirty}</td></tr>")
    jobs.append("</table>")
    seen: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        flat = _flatten({k: v for k, v in r.items() if k not in ("job", "command", "git", "profile")})
        for key, value in flat.items():
            seen[key][str(value)].append(r["job"])
    env = ["<h2>Software, hardware and seeds</h2><table><tr><th>key</th><th>value</th><th>jobs</th></tr>"]
    for key in sorted(seen):
        values = seen[key]
        for value, js in sorted(values.items()):
            who = "all" if len(values) == 1 else ", ".join(js)
            env.append(f"<tr><td>{e(key)}</td><td><code>{e(value)}</code></td><td>{e(who)}</td></tr>")
    env.append("</table>")
    commits = {str((r.get("git") or {}).get("commit")) for r in records}
    dirty = sum(bool((r.get("git") or {}).get("dirty")) for r in records)
    head = (f"<h1>Provenance</h1><p>{len(records)} jobs, {len(commits)} distinct commit(s), "
            f"{dirty} job(s) run from a work tree with uncommitted changes.</p>")
    return head + "\n".join(jobs) + "\n" + "\n".join(env)


def provenance_page(profile: str, out: str | Path, root: str | Path = ".") -> int:
    """Write the provenance page of ``profile``'s jobs; returns the number of jobs."""
    from .provenance import read_all

    records = read_all(profile, root)
    with atomic_path(out) as tmp:
        tmp.write_text(_page(f"Provenance ({profile})", provenance_html(records)), encoding="utf-8")
    return len(records)

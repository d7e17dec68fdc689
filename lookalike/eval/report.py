"""The offline HTML report of ``lookalike eval``: tables, precision-recall curves (matplotlib,
embedded as PNG) and, for the worst classes, queries with their top results as thumbnails."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from lookalike.eval.retrieval import metric_names, pr_curve
from lookalike.eval.runner import EvalRun

WORST_CLASSES = 3
QUERIES_PER_CLASS = 3
RESULTS_SHOWN = 8
THUMB = 112


def _png_curves(run: EvalRun) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=100)
    for r in run.results:
        recall, precision = pr_curve(r.metrics)
        ax.plot(recall, precision, marker=".", label=f"{r.name} (mAP {r.overall['mAP']:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("interpolated precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _thumb(path: Path) -> str:
    from lookalike.images import load_image

    try:
        image = load_image(str(path), min_side=0).image
    except Exception:  # noqa: BLE001 - a thumbnail that fails is shown as missing
        return ""
    image.thumbnail((THUMB, THUMB))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=80)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(path: Path, caption: str, css: str) -> str:
    data = _thumb(path)
    img = f'<img src="data:image/jpeg;base64,{data}" alt="">' if data else "<div>?</div>"
    return (
        f'<figure class="{css}" title="{html.escape(str(path))}">{img}'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _worst(run: EvalRun) -> str:
    first = run.results[0]
    labels = np.asarray(run.data.labels)
    ranked = sorted(
        (c for c in run.data.classes if not np.isnan(first.per_class[c]["mAP"])),
        key=lambda c: first.per_class[c]["mAP"],
    )[:WORST_CLASSES]
    out = [f"<h2>Worst classes ({html.escape(first.name)})</h2>"]
    for label in ranked:
        rows = np.flatnonzero(labels == label)
        ap = first.metrics.ap[rows]
        order = rows[np.argsort(np.where(np.isnan(ap), np.inf, ap), kind="stable")]
        out.append(f"<h3>{html.escape(label)}: mAP {first.per_class[label]['mAP']:.3f}</h3>")
        for q in order[:QUERIES_PER_CLASS]:
            cells = [_figure(run.data.paths[q], f"query, AP {first.metrics.ap[q]:.2f}", "query")]
            for rank, pos in enumerate(first.metrics.top[q][:RESULTS_SHOWN], 1):
                if pos < 0:
                    break
                ok = run.data.labels[pos] == label
                cells.append(
                    _figure(
                        run.data.paths[pos],
                        f"{rank}. {run.data.labels[pos]}",
                        "hit" if ok else "miss",
                    )
                )
            out.append(f'<div class="row">{"".join(cells)}</div>')
    return "\n".join(out)


def write_html_report(run: EvalRun, path: Path) -> None:
    """Write the report to ``path`` (one self-contained file: no network needed to view it)."""
    cols = metric_names()
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        f"<tr><td>{html.escape(r.name)}</td>"
        + "".join(f"<td>{r.overall[c]:.3f}</td>" for c in cols)
        + "</tr>"
        for r in run.results
    )
    per_class_head = "".join(f"<th>{html.escape(r.name)}</th>" for r in run.results)
    per_class = "".join(
        f"<tr><td>{html.escape(c)}</td>"
        + "".join(
            "<td>n/a (1 image)</td>"
            if np.isnan(r.per_class[c]["mAP"])
            else f"<td>{r.per_class[c]['mAP']:.3f}</td>"
            for r in run.results
        )
        + "</tr>"
        for c in run.data.classes
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in run.notes)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lookalike eval</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.row {{ display: flex; gap: 6px; margin-bottom: 10px; flex-wrap: wrap; }}
figure {{ margin: 0; width: {THUMB}px; font-size: 11px; text-align: center; }}
figure img {{ max-width: {THUMB}px; max-height: {THUMB}px; border: 3px solid transparent; }}
.query img {{ border-color: #36c; }} .hit img {{ border-color: #2a2; }}
.miss img {{ border-color: #d33; }}
</style></head><body>
<h1>Retrieval quality: {html.escape(str(run.folder))}</h1>
<p>{len(run.data)} images, {len(run.data.classes)} classes. Every image is a query; relevant =
same label, the query itself and its duplicates excluded.</p>
<ul>{notes}</ul>
<table><tr><th>setting</th>{head}</tr>{body}</table>
<h2>Precision-recall</h2>
<img alt="precision-recall curves" src="data:image/png;base64,{_png_curves(run)}">
<h2>mAP per class</h2>
<table><tr><th>class</th>{per_class_head}</tr>{per_class}</table>
{_worst(run)}
</body></html>
"""
    from lookalike.atomic import write_atomic

    write_atomic(Path(path), page.encode("utf-8"))

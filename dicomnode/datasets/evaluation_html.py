"""``report.html``: the evaluation report as one self-contained page.

Every value is escaped (a manifest's item ids and a header's Manufacturer are text from
elsewhere); the pictures are embedded as data URIs so the page needs no other file.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:70em;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em}
th{background:#f3f3f3;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.headline{display:flex;flex-wrap:wrap;gap:1em}.figure{border:1px solid #ddd;padding:.6em 1em}
.figure b{font-size:1.6em;display:block}.muted{color:#666;font-size:.9em}
.error{color:#a00}img{max-width:100%;border:1px solid #eee}code{font-size:.85em}
"""


def report_html(report: Mapping[str, Any], pictures: Mapping[str, bytes], sha256: str) -> str:
    """The page for ``report`` (report.json's data), ``pictures`` by file name."""
    title = f"Evaluation of {report['pipeline']}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _provenance(report, sha256),
    ]
    if report.get("classification") is not None:
        parts.append(_classification(report, pictures))
    if report.get("segmentation") is not None:
        parts.append(_segmentation(report["segmentation"]))
    parts.append(_subgroups(report))
    parts.append(_items(report))
    parts.append("</body></html>")
    return "\n".join(parts)


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{_num(c)}</td>'
            if isinstance(c, int | float) or c is None
            else f"<td>{_e(c)}</td>"
            for c in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _provenance(report: Mapping[str, Any], sha256: str) -> str:
    dataset = report["dataset"]
    rows = [
        ("task", report["task"]),
        ("model", report["model"]),
        ("model SHA-256", report["model_sha256"]),
        ("pipeline SHA-256", report["pipeline_sha256"]),
        ("manifest", dataset["manifest"]),
        ("manifest SHA-256", dataset["manifest_sha256"]),
        ("evaluated files SHA-256", dataset["files_sha256"]),
        ("report.json SHA-256", sha256),
        ("dicomnode version", report["dicomnode_version"]),
        ("created (UTC)", report["created"]),
    ]
    table = "".join(f"<tr><th>{_e(k)}</th><td><code>{_e(v)}</code></td></tr>" for k, v in rows)
    counts = (
        f"{dataset['items']} items run: {dataset['evaluated']} evaluated, "
        f"{dataset['failed']} failed (left out of every figure); "
        f"{dataset['skipped_unlabelled']} rows without a label or reference skipped."
    )
    return f"<table>{table}</table><p>{_e(counts)}</p>"


def _ratio_parts(ratio: Mapping[str, Any]) -> tuple[str, str]:
    counts = f"{ratio['count']}/{ratio['of']}"
    if ratio["value"] is None:
        return "—", f"({counts}: undefined)"
    low, high = ratio["ci95"]
    return f"{ratio['value']:.3f}", f"({counts}; 95 % CI {low:.3f}-{high:.3f})"


def _auc_parts(figures: Mapping[str, Any]) -> tuple[str, str]:
    if figures.get("auc") is None:
        return "—", "(needs both classes)"
    ci = figures.get("auc_ci95")
    if ci is None:
        return f"{figures['auc']:.3f}", ""
    detail = f"(95 % CI {ci['low']:.3f}-{ci['high']:.3f}, {ci['used']} bootstrap resamples)"
    return f"{figures['auc']:.3f}", detail


def _ratio_text(ratio: Mapping[str, Any]) -> str:
    return " ".join(_ratio_parts(ratio))


def _auc_text(figures: Mapping[str, Any]) -> str:
    return " ".join(_auc_parts(figures)).strip()


def _classification(report: Mapping[str, Any], pictures: Mapping[str, bytes]) -> str:
    c = report["classification"]
    options = report["options"]
    cards = [
        ("AUC", _auc_parts(c)),
        ("Sensitivity", _ratio_parts(c["sensitivity"])),
        ("Specificity", _ratio_parts(c["specificity"])),
        ("PPV", _ratio_parts(c["ppv"])),
        ("NPV", _ratio_parts(c["npv"])),
    ]
    headline = "".join(
        f'<div class="figure">{_e(name)}<b>{_e(value)}</b>'
        f'<span class="muted">{_e(detail)}</span></div>'
        for name, (value, detail) in cards
    )
    m = c["confusion_matrix"]
    matrix = (
        "<table><tr><th></th><th>predicted positive</th><th>predicted negative</th></tr>"
        f'<tr><th>label positive</th><td class="n">TP {m["tp"]}</td>'
        f'<td class="n">FN {m["fn"]}</td></tr>'
        f'<tr><th>label negative</th><td class="n">FP {m["fp"]}</td>'
        f'<td class="n">TN {m["tn"]}</td></tr></table>'
    )
    calibration = c.get("calibration") or {}
    images = "".join(
        f'<img alt="{_e(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        for name, data in pictures.items()
    )
    return (
        f"<h2>Classification: {_e(c['finding'])}</h2>"
        f"<p>{c['positives']} positive and {c['negatives']} negative items; operating "
        f"threshold {_e(options['threshold'])} (from the {_e(options['threshold_source'])}): "
        "an item is called positive at or above it.</p>"
        f'<div class="headline">{headline}</div>'
        f"<h3>Confusion matrix</h3>{matrix}"
        f"<p>Brier score {_num(calibration.get('brier'))} (0 is perfect; 0.25 is a constant"
        " 0.5).</p>"
        f'<div class="headline">{images}</div>'
    )


def _segmentation(s: Mapping[str, Any]) -> str:
    rows = [
        (
            seg["name"],
            seg["label"],
            seg["dice"]["n"],
            seg["dice"]["mean"],
            seg["dice"]["sd"],
            seg["dice"]["min"],
            seg["difference_ml"]["mean"],
            seg["absolute_difference_ml"]["mean"],
            seg["relative_difference"]["mean"],
        )
        for seg in s["segments"]
    ]
    header = (
        "segment",
        "label",
        "items with Dice",
        "Dice mean",
        "Dice SD",
        "Dice min",
        "volume difference mean (ml)",
        "|volume difference| mean (ml)",
        "relative difference mean",
    )
    return (
        f"<h2>Segmentation: {s['items']} items</h2>"
        "<p>Dice: overlap with the reference SEG (1 is identical). Volume difference: "
        "predicted minus reference; relative: divided by the reference volume.</p>"
        + _table(header, rows)
    )


def _subgroups(report: Mapping[str, Any]) -> str:
    parts = ["<h2>Subgroups</h2>"]
    classifying = report.get("classification") is not None
    for key, values in report["subgroups"].items():
        parts.append(f"<h3>{_e(key)}</h3>")
        header: tuple[str, ...]
        rows: list[Sequence[Any]]
        if classifying:
            header = ("value", "items", "positives", "AUC", "sensitivity", "specificity")
            header += ("PPV", "NPV")
            rows = [
                (
                    value,
                    f["items"],
                    f["positives"],
                    _auc_text(f),
                    _ratio_text(f["sensitivity"]),
                    _ratio_text(f["specificity"]),
                    _ratio_text(f["ppv"]),
                    _ratio_text(f["npv"]),
                )
                for value, f in values.items()
            ]
        else:
            header = ("value", "items", "segment", "Dice mean", "volume difference mean (ml)")
            rows = [
                (value, f["items"], seg["name"], seg["dice"]["mean"], seg["difference_ml"]["mean"])
                for value, f in values.items()
                for seg in f["segments"]
            ]
        parts.append(_table(header, rows))
    return "".join(parts)


def _items(report: Mapping[str, Any]) -> str:
    classifying = report.get("classification") is not None
    rows = []
    for item in report["items"]:
        if classifying:
            outcome = [item["label"], item["score"], item["predicted"]]
        else:
            outcome = [
                "; ".join(
                    f"{s['name']}: Dice {_num(s['dice'])}, Δ {_num(s['difference_ml'])} ml"
                    for s in item.get("segments") or ()
                )
            ]
        groups = item["subgroups"]
        rows.append(
            [
                item["item"],
                *outcome,
                groups.get("Manufacturer", ""),
                groups.get("SliceThicknessBand", ""),
                item["error"] or "",
            ]
        )
    header = ["item", *(["label", "score", "predicted"] if classifying else ["segments"])]
    header += ["Manufacturer", "slice thickness", "error"]
    return "<h2>Items</h2>" + _table(header, rows)

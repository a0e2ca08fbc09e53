"""Evaluation report outputs: JSON, a markdown table per split, and a bar chart (PNG)."""

from __future__ import annotations

import json
from pathlib import Path

from advisor.intervals import NOMINAL

COLUMNS = (
    ("top1", "top-1"),
    ("top1_tol", "top-1 (3 % tie)"),
    ("mean_regret", "mean regret"),
    ("gap_closed", "gap closed"),
    ("ndcg3", "NDCG@3"),
)


def selectors_in(split_report: dict) -> list[str]:
    return [name for name in split_report if not name.startswith("_")]


def markdown(report: dict) -> str:
    lines = [
        f"### {report['table']}: {report['n_tasks']} tasks × {report['n_candidates']} candidates",
        "",
        f"{report['gap_direction']} Mean ± std over seeds.",
        "",
    ]
    for split, results in report["splits"].items():
        lines += [
            f"**split: {split}** ({results['_seeds']} seed(s), {results['_folds']} folds)",
            "",
            "| selector | " + " | ".join(label for _, label in COLUMNS) + " |",
            "|---|" + "---:|" * len(COLUMNS),
        ]
        for name in selectors_in(results):
            cells = [f"{results[name][key]['mean']:.3f} ± {results[name][key]['std']:.3f}" for key, _ in COLUMNS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
        if results.get("_per_kind"):
            kinds = list(results["_per_kind"])
            lines += [
                f"gap closed per workload kind, split {split} (the same out-of-fold choices)",
                "",
                "| selector | " + " | ".join(kinds) + " |",
                "|---|" + "---:|" * len(kinds),
            ]
            for name in selectors_in(results):
                cells = [results["_per_kind"][k][name]["gap_closed"]["mean"] for k in kinds]
                lines.append(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
            lines.append("")
        if results.get("_coverage"):
            lines += [
                f"interval coverage on held-out cells, split {split} (nominal {100 * NOMINAL:.0f} %)",
                "",
                "| figure | raw | calibrated | conformal offset | cells |",
                "|---|---:|---:|---:|---:|",
            ]
            for figure, c in results["_coverage"].items():
                lines.append(
                    f"| {figure} | {c['raw']:.3f} | {c['calibrated']:.3f} | {c['offset']:+.3f} | {c['cells']} |"
                )
            lines.append("")
    landmarks = report.get("landmarks")
    if landmarks:
        counts = list(landmarks["by_count"])
        names = selectors_in(next(iter(landmarks["by_count"].values()))["results"])
        lines += [
            "**unseen models with landmark probes** (gap closed; probe time as a fraction of the model's full profile)",
            "",
            "| selector | " + " | ".join(f"{k} probe(s)" for k in counts) + " |",
            "|---|" + "---:|" * len(counts),
            "| probe time | "
            + " | ".join(f"{100 * landmarks['by_count'][k]['probe_cost_fraction']:.1f} %" for k in counts)
            + " |",
        ]
        for name in names:
            cells = [landmarks["by_count"][k]["results"][name]["gap_closed"]["mean"] for k in counts]
            lines.append(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
        lines += ["", "probes in order: " + ", ".join(landmarks["order"]), ""]
    for split, reason in report.get("skipped", {}).items():
        lines.append(f"split {split} skipped: {reason}")
    return "\n".join(lines)


def chart(report: dict, path: Path) -> None:
    """Gap closed per selector, one group of bars per split."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    splits = list(report["splits"])
    names = [n for n in selectors_in(report["splits"][splits[0]]) if n not in ("random",)]
    fig, ax = plt.subplots(figsize=(min(14, max(6, 0.5 * len(names) * len(splits))), 4.5))
    width = 0.8 / len(splits)
    for k, split in enumerate(splits):
        results = report["splits"][split]
        means = [results[n]["gap_closed"]["mean"] for n in names]
        spreads = [results[n]["gap_closed"]["std"] for n in names]
        ax.bar([i + k * width for i in range(len(names))], means, width, yerr=spreads, label=split, capsize=2)
    ax.set_xticks([i + width * (len(splits) - 1) / 2 for i in range(len(names))], names, rotation=30, ha="right")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("fraction of SBS→VBS gap closed")
    ax.set_title(report["table"])
    ax.legend(title="split")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(reports: list[dict], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "report.json", out_dir / "report.md"]
    paths[0].write_text(json.dumps(reports, indent=2, sort_keys=True))
    paths[1].write_text("\n\n".join(markdown(r) for r in reports))
    for i, report in enumerate(reports):
        png = out_dir / ("chart.png" if i == 0 else f"chart-{i}.png")
        if report["splits"]:
            chart(report, png)
            paths.append(png)
    return paths

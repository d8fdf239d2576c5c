"""Statistics and tables of the post-training comparison: per method and metric the mean and 95 % Student-t
interval over seeds and the paired differences to the pretrained model (:func:`row_statistics`), the Markdown
table (:func:`results_table`), the summary scripts read (:func:`docs_results`, ``docs/results.json``) and the
paper's Figure 4 layout (:func:`figure4`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from reasonaudio.metrics.listening import summarize

ROWS = ("pretrained", "sft", "rwr", "dpo_beta1", "dpo_beta2", "dpo_beta5", "dpo_beta50", "dpo_beta5_online2")
"""The methods of ``docs/results.json`` (issue 20), in table order; a comparison may run a subset."""
METRICS = {"onset_error_ms": ("onset_error", 1000.0), "onset_f1": ("onset_f1", 1.0), "desync_s": ("desync", 1.0),
           "reward": ("reward", 1.0), "fd_latent": ("fd_latent", 1.0), "fd_mel": ("fd_mel", 1.0),
           "timbre_agreement": ("timbre_agreement", 1.0)}
"""Reported name → (key of an evaluation, scale)."""


def mean_ci95(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "ci95": [lo, hi], "n"}``: the mean and its two-sided 95 % Student-t interval over ``values``
    (one value per seed); ``ci95`` is None for a single value."""
    s = summarize([float(v) for v in values])
    ci = None if s.n < 2 else [s.mean - s.ci95, s.mean + s.ci95]
    return {"mean": s.mean, "ci95": ci, "n": s.n}


def row_statistics(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per method and metric, mean and 95 % CI over seeds; ``delta_<metric>_vs_pretrained`` are the paired
    differences (seed s of the method minus the pretrained model at noise set s)."""
    base = results["models"]["pretrained"]
    rows: dict[str, dict[str, Any]] = {}
    for name, per_seed in results["models"].items():
        seeds = sorted(per_seed, key=int)
        row: dict[str, Any] = {"seeds": [int(s) for s in seeds]}
        for metric, (key, scale) in METRICS.items():
            if all(key in per_seed[s] for s in seeds):
                row[metric] = mean_ci95([scale * per_seed[s][key] for s in seeds])
                if name != "pretrained":
                    row[f"delta_{metric}_vs_pretrained"] = mean_ci95([scale * (per_seed[s][key] - base[s][key])
                                                                      for s in seeds])
        rows[name] = row
    return rows


def docs_results(results: dict[str, Any]) -> dict[str, Any]:
    """The summary read by scripts (``docs/results.json``): reward agreement with the ground truth and, per
    method of :data:`ROWS`, every metric's mean and 95 % CI and its paired difference to the pretrained model."""
    agreement = results["reward_vs_ground_truth"]
    stats = row_statistics(results)
    return {"reward": results.get("settings", {}).get("reward"),
            "reward_pair_agreement": agreement["pair_agreement"], "reward_spearman": agreement["spearman"],
            "reward_spearman_within_groups": agreement["spearman_within"],
            "reward_saturated_low": agreement["saturated_low"], "reward_saturated_high": agreement["saturated_high"],
            "reward_alternatives": {name: {k: alt[k] for k in ("pair_agreement", "spearman", "spearman_within",
                                                                "saturated_low", "saturated_high")}
                                    for name, alt in agreement.get("alternatives", {}).items()},
            "preference_pairs": results["preference_pairs"], "heldout_clips": results["heldout_clips"],
            "machine": results["machine"], "total_min": round(results["total_s"] / 60, 1),
            "rows": {name: stats[name] for name in ROWS if name in stats}}


def _cell(stat: dict[str, Any] | None, digits: int) -> str:
    if stat is None:
        return "—"
    if stat["ci95"] is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['mean'] - stat['ci95'][0]:.{digits}f}"


def _significant(stat: dict[str, Any] | None) -> str:
    """A star when the 95 % CI excludes 0."""
    return " *" if stat and stat["ci95"] and (stat["ci95"][0] > 0 or stat["ci95"][1] < 0) else ""


def results_table(results: dict[str, Any]) -> str:
    """The markdown table of a finished comparison (mean ± 95 % CI half-width over seeds)."""
    stats = row_statistics(results)
    rows = ["| model | onset error (ms) ↓ | Δ error (ms) | onset F1 ↑ | Δ F1 | DeSync (s) ↓ | Δ DeSync (s) | "
            "reward ↑ | FD-latent ↓ | FD-mel ↓ | timbre ↑ |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    order = [n for n in ROWS if n in stats] + [n for n in stats if n not in ROWS]
    for name in order:
        r = stats[name]
        delta = lambda m, d: (_cell(r.get(f"delta_{m}_vs_pretrained"), d)  # noqa: E731
                              + _significant(r.get(f"delta_{m}_vs_pretrained"))) if name != "pretrained" else "—"
        rows.append(f"| {results['labels'].get(name, name)} | {_cell(r['onset_error_ms'], 1)} | "
                    f"{delta('onset_error_ms', 1)} | {_cell(r['onset_f1'], 3)} | {delta('onset_f1', 3)} | "
                    f"{_cell(r.get('desync_s'), 3)} | {delta('desync_s', 3)} | {_cell(r.get('reward'), 3)} | "
                    f"{_cell(r['fd_latent'], 3)} | {_cell(r.get('fd_mel'), 3)} | {_cell(r['timbre_agreement'], 3)} |")
    return "\n".join(rows)


def figure4(curves: dict[str, dict[str, dict[str, dict[str, float]]]], labels: dict[str, str], path: Path) -> Path:
    """The paper's Figure 4 layout: reward and DeSync of held-out generations against the post-training step, one
    line per method (mean over seeds, bars: min and max). ``curves[method][seed][step]`` holds
    :func:`~reasonaudio.experiments.post_train_eval.evaluate`'s values (one generation per clip)."""
    # lazy: matplotlib is no install requirement (setup.cfg); only the figure needs it
    import matplotlib

    matplotlib.use("Agg")
    # lazy: pyplot must load after matplotlib.use("Agg") picks the headless backend
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for (key, title, scale), ax in zip((("reward", "reward ↑", 1.0), ("desync", "DeSync (s) ↓", 1.0),
                                        ("onset_error", "onset error (ms) ↓ (ground truth)", 1000.0)), axes):
        for name, per_seed in curves.items():
            steps = sorted({int(k) for points in per_seed.values() for k in points})
            values = np.array([[scale * per_seed[s][str(k)][key] for k in steps] for s in sorted(per_seed)])
            mean = values.mean(0)
            ax.errorbar(steps, mean, yerr=[mean - values.min(0), values.max(0) - mean], marker="o", capsize=3,
                        label=labels.get(name, name))
        ax.set_xlabel("post-training step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Post-training on the synthetic corpus: held-out generations against the training step")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

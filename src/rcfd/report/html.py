"""``rcfd report``: one self-contained HTML file (figures embedded as PNG) plus the PNGs themselves.

Sections: the paper's figures (:mod:`rcfd.report.plots`), a metrics table, samples of every method on the
same held-out prompts, and a compute-to-solution table: what RCfD's single run cost to reach an
alignment threshold against what the β/α sweep cost to find a value as good.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

from ..errors import RcfdError
from ..files import read_json, write_text
from .tables import COLUMNS, demo_row
from .results import describe_setting, load_results

FIGURES = [  # (plot function, title, what the reader should look at)
    ("reward_distributions", "Reward distributions",
     "Each run's rewards on the held-out prompts (outlines, dotted mean) against the demonstrations' (grey, "
     "dashed mean): a calibrated run overlaps them; an over-optimized one sits past them."),
    ("loglik_by_position", "Log-likelihood by generation position",
     "Mean log-likelihood under the base model at each token position; past the training length (dotted) a "
     "policy that learned to loop climbs away from the demonstrations (the paper's Figure 2)."),
    ("reward_plane", "Reward plane",
     "One point per run: its mean of the first two rewards, or with one reward its mean reward against its KL "
     "to the base model; the demonstrations' mean is the target, a β or α sweep is drawn as a front."),
    ("training_curves", "Training curves",
     "Reward, KL to the base model, length and distinct-2 per RL step, from each run's metrics.jsonl."),
]

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption, .note { color: #555; font-size: 0.85em; }
@media print { figure, table { page-break-inside: avoid; } }
"""

# Lets a headless browser (and a reader) see that every figure decoded.
LOAD_CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var boxes = imgs.map(function (i) { var r = i.getBoundingClientRect();
    return [Math.round(r.left), Math.round(r.top), Math.round(r.width), Math.round(r.height)]; });
  document.body.setAttribute('data-figures', imgs.length);
  document.body.setAttribute('data-figures-loaded', ok.length);
  document.body.setAttribute('data-figure-boxes', JSON.stringify(boxes));
});
</script>"""


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _num(x, fmt="{:.3f}") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def _seconds(x) -> str:
    """Training seconds with the digits that matter: 0.4 s is not 0."""
    return _num(x, "{:.0f}" if x is not None and x >= 10 else "{:.1f}")


def _table(header, rows, numeric_from=1) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td class='num'>{c}</td>" if i >= numeric_from else f"<td>{c}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def metrics_table(runs) -> str:
    header = ["run", "objective"] + [name for name, _ in COLUMNS] + ["training s"]
    first = next(r for r in runs if r.family != "base") if any(r.family != "base" for r in runs) else runs[0]
    rows = [["demonstrations", "–"] + [html.escape(fmt(demo_row(first.metrics))) for _, fmt in COLUMNS] + ["–"]]
    for r in runs:
        m = dict(r.metrics)
        m.setdefault("kl_to_ref", float("nan"))
        rows.append([html.escape(r.name), html.escape(str(m.get("objective", "")))]
                    + [html.escape(fmt(m)) for _, fmt in COLUMNS] + [_seconds(r.compute_seconds)])
    per_reward = ""
    names = first.reward_names
    if len(names) > 1:
        prow = [[html.escape(r.name)] + [f"{_num(r.metrics.get(f'rewards/{n}/mean'))} (A {_num(r.metrics.get(f'rewards/{n}/alignment'))})"
                                         for n in names] for r in runs]
        prow.insert(0, ["demonstrations"] + [_num(first.metrics.get(f"rewards/{n}/demo_mean")) for n in names])
        per_reward = "<p class='note'>Per reward: mean (alignment A).</p>" + _table(["run"] + names, prow)
    return _table(header, rows, numeric_from=2) + per_reward


def samples_table(runs, n_prompts: int = 3, width: int = 300) -> str:
    with_samples = [r for r in runs if r.metrics.get("samples")]
    if not with_samples:
        return "<p class='note'>No samples were stored with these runs.</p>"
    parts = []
    for i, s in enumerate(with_samples[0].metrics["samples"][:n_prompts]):
        rows = []
        for r in with_samples:
            own = r.metrics["samples"]
            if i < len(own) and own[i]["prompt"] == s["prompt"]:
                rows.append([html.escape(r.name), html.escape(own[i]["completion"][:width]), _num(own[i]["reward"])])
        parts.append(f"<p><b>Prompt {i + 1}:</b> {html.escape(s['prompt'])}</p>"
                     + _table(["method", "completion", "reward"], rows, numeric_from=2))
    return "".join(parts)


def compute_rows(runs, threshold: float) -> list[list[str]]:
    """RCfD's single run against each sweep: cost to reach alignment ≤ τ (τ given, and τ = RCfD's own)."""
    rcfd = [r for r in runs if r.family == "rcfd"]
    families = {f: [r for r in runs if r.family == f] for f in ("beta", "alpha")}
    families = {f: members for f, members in families.items() if members}
    if not rcfd or not families:
        return []
    rows = []
    for ref in rcfd:
        taus = [("given", threshold), (f"as good as {ref.name}", ref.metrics["alignment"])]
        for label, tau in taus:
            reached = ref.metrics["alignment"] <= tau + 1e-12
            for family, members in families.items():
                sweep_cost = sum(r.compute_seconds or 0.0 for r in members)
                good = [r for r in members if r.metrics["alignment"] <= tau + 1e-12]
                best = min(members, key=lambda r: r.metrics["alignment"])
                ratio = sweep_cost / ref.compute_seconds if ref.compute_seconds and reached else None
                ratio_text = "–" if ratio is None else f"{ratio:.1f}×" + ("" if good else " (the sweep found none)")
                rows.append([
                    html.escape(f"{label}: A ≤ {tau:.3f}"),
                    f"{ref.name}: A {ref.metrics['alignment']:.3f}, {'reached' if reached else 'not reached'}, "
                    f"{_num(ref.compute_seconds, '{:.1f}')} s",
                    html.escape(f"{family} ({len(members)} runs): best {best.name} A {best.metrics['alignment']:.3f}; "
                                f"{len(good)} run(s) reach it"),
                    _num(sweep_cost, "{:.1f}"),
                    ratio_text,
                ])
    return rows


def seeds_section(path: Path, fig_dir: Path) -> str:
    """Table over seeds (as ``rcfd demo --seeds`` prints it) and the per-seed strip plot."""

    from . import plots
    from ..plans.seeds import format_seeds_table

    record = read_json(path / "seeds.json")
    png = _png(plots.seed_strips(record))
    (fig_dir / "seeds.png").write_bytes(png)
    data = base64.b64encode(png).decode("ascii")
    return (f"<h2>Across seeds ({html.escape(str(path))})</h2><pre>{html.escape(format_seeds_table(record))}</pre>"
            f"<figure><img alt='per-seed strip plot' src='data:image/png;base64,{data}'>"
            f"<figcaption>{fig_dir.name}/seeds.png; the figures below are seed {record['seeds'][0]}'s</figcaption></figure>")


def build_report(dirs, out, *, threshold: float = 0.15, title: str | None = None) -> Path:
    """Write ``out`` (HTML) and ``<out stem>_figures/*.png``; return the HTML path."""
    from . import plots

    runs, demo = load_results(dirs)
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise RcfdError(f"--out '{out}' should name an .html file, e.g. --out report.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig_dir = out.with_name(out.stem + "_figures")
    fig_dir.mkdir(exist_ok=True)
    colors = plots.run_colors(runs)
    figure_html = []
    for name, title, caption in FIGURES:
        png = _png(getattr(plots, name)(runs, demo, colors))
        (fig_dir / f"{name}.png").write_bytes(png)
        data = base64.b64encode(png).decode("ascii")
        figure_html.append(f"<h2>{title}</h2><figure><img alt='{title}' src='data:image/png;base64,{data}'>"
                           f"<figcaption>{html.escape(caption)} (also {fig_dir.name}/{name}.png)</figcaption>"
                           f"</figure>")
    seeds_html = "".join(seeds_section(Path(d), fig_dir) for d in dirs if (Path(d) / "seeds.json").exists())
    rows = compute_rows(runs, threshold)
    compute = (_table(["threshold", "RCfD (one run)", "sweep", "sweep training s", "sweep / RCfD"], rows, numeric_from=3)
               if rows else "<p class='note'>Needs an RCfD run and a β or α sweep (rcfd sweep --with-rcfd).</p>")
    sources = ", ".join(html.escape(str(d)) for d in dirs)
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title or 'rcfd report')}</title>
<style>{STYLE}</style></head>
<body>
<h1>{html.escape(title or 'rcfd report')}</h1>
<p><b>{html.escape(describe_setting(runs))}</b></p>
<p class="note">From {sources}. Rewards: {', '.join(map(html.escape, demo.reward_names))}.
Alignment A = KL(ρ_demo ‖ ρ_policy) between reward histograms on shared bins (lower is closer to the
demonstrations); W1 = Wasserstein-1 between the reward samples; KL(ref) = sampled KL to the reference
in nats per sequence.</p>
{seeds_html}
{''.join(figure_html[:3])}
<h2>Metrics on held-out prompts</h2>{metrics_table(runs)}
<h2>Compute to solution</h2>
<p class="note">Training seconds (summed step times). A sweep has to run all its values to know which
one is best, so its cost is the whole grid; RCfD is one run.</p>{compute}
{figure_html[3]}
<h2>Samples on the same held-out prompts</h2>{samples_table(runs)}
{LOAD_CHECK}
</body></html>
"""
    write_text(out, doc)
    return out

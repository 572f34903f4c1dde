"""The evaluation report: Markdown and a self-contained HTML page (plots inlined), plus PNGs.

Markdown tables render in the KFP UI's Markdown viewer; the HTML carries the plots as data
URIs so one file shows everything in the KFP UI and in MLflow.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Sequence

from ..curves import RECALL_KEY

PLOTS = ("metrics_vs_k.png", "best_of_n.png", "reasoning_length.png")


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def metrics_table(rows: dict[str, dict[str, float]], ks: Sequence[int]) -> tuple[list[str], list[list[str]]]:
    head = ["method", "n", "invalid"] + [f"{m}@{k}" for k in ks for m in ("R", "N")]
    body = [[name, str(int(m.get("n", 0))), str(int(m.get("invalid", 0)))] + [_fmt(m.get(f"{x}@{k}", float("nan")))
                                                for k in ks for x in ("recall", "ndcg")]
            for name, m in rows.items()]
    return head, body


def _md_table(head, body) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def _html_table(head, body) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def make_plots(out: Path, tables: dict[str, dict[str, dict[str, float]]], ks: Sequence[int],
               best_of_n: list[float], reasoning_lengths: list[int]) -> list[str]:
    """Write the PNGs that have data; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    rows = tables.get("main", {})
    if rows:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for ax, metric in zip(axes, ("recall", "ndcg")):
            for name, m in rows.items():
                ax.plot(list(ks), [m.get(f"{metric}@{k}", float("nan")) for k in ks], marker="o", label=name)
            ax.set_xlabel("K")
            ax.set_title(f"{'Recall' if metric == 'recall' else 'NDCG'}@K")
            ax.set_xticks(list(ks))
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / PLOTS[0], dpi=100)
        plt.close(fig)
        written.append(PLOTS[0])
    if best_of_n:
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
        ax.plot(range(1, len(best_of_n) + 1), best_of_n, marker="o")
        ax.set_xlabel("N (sampled reasoning traces)")
        ax.set_ylabel("Recall@10 of the best trace")
        ax.set_title("Best-of-N")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / PLOTS[1], dpi=100)
        plt.close(fig)
        written.append(PLOTS[1])
    if reasoning_lengths:
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
        ax.hist(reasoning_lengths, bins=min(30, max(5, len(set(reasoning_lengths)))))
        ax.set_xlabel("reasoning tokens")
        ax.set_ylabel("traces")
        ax.set_title("Reasoning length")
        fig.tight_layout()
        fig.savefig(out / PLOTS[2], dpi=100)
        plt.close(fig)
        written.append(PLOTS[2])
    return written


def _item(sid: str, title: str) -> str:
    return f"{sid} {title}".strip()


def _example(ex: dict) -> tuple[list[str], str]:
    """One example (`evaluation.stage._example`) as Markdown lines and an HTML block."""
    head = f"user {ex['user_id']} ({ex['mode']} mode): the target is {ex['rank']}"
    history = [_item(*h) for h in ex["history"]]
    top = [_item(sid, title) + (" <- target" if hit else "") for sid, title, hit in ex["top"]]
    md = [f"### {head}", "", "- history (oldest first): " + "; ".join(f"`{h}`" for h in history),
          f"- target: `{_item(*ex['target'])}`", "- top recommendations:"] + [f"  {i}. `{t}`" for i, t in
                                                                            enumerate(top, 1)]
    page = (f"<h3>{html.escape(head)}</h3><p>history (oldest first):</p><ol>"
            + "".join(f"<li>{html.escape(h)}</li>" for h in history)
            + f"</ol><p>target: <b>{html.escape(_item(*ex['target']))}</b></p><p>top recommendations:</p><ol>"
            + "".join(f"<li>{'<b>' if hit else ''}{html.escape(_item(sid, title))}{'</b>' if hit else ''}</li>"
                      for sid, title, hit in ex["top"]) + "</ol>")
    if ex.get("reasoning"):
        md += ["", "  > " + ex["reasoning"][:600].replace("\n", " ")]
        page += f"<blockquote>{html.escape(ex['reasoning'][:600])}</blockquote>"
    return md + [""], page


CURVE_COLUMNS = (("reward", "reward"), (RECALL_KEY, "valid R@10 (thinking)"),
                 ("eval/reasoning_tokens", "valid reasoning tokens"), ("reasoning/words", "rollout reasoning words"),
                 ("reasoning/think_closed_share", "rollouts closing </think>"))
CURVES_PLOT = "grpo_curves.png"


def training_curves(model_dir: Path) -> tuple[list[dict], Path | None]:
    """The GRPO curves the model artifact carries (`curves.jsonl` and its plot beside `model/`), if any."""
    from ..curves import CURVES_FILE, CurveLog

    root = Path(model_dir).parent
    if not (root / CURVES_FILE).is_file():
        return [], None
    rows = CurveLog(root / CURVES_FILE).rows()
    if not any("reward" in r for r in rows):  # not GRPO curves (cold-start logs losses only)
        return [], None
    png = root / "curves.png"
    return rows, png if png.is_file() else None


def curves_table(rows: list[dict], max_rows: int = 12) -> tuple[list[str], list[list[str]]]:
    """Reward, validation R@10 in thinking mode and reasoning length over the GRPO steps: the steps with a
    validation point, or evenly spaced steps when there are none; the reward is the mean since the last row."""
    marks = [i for i, r in enumerate(rows) if RECALL_KEY in r] or \
        sorted({round(i * (len(rows) - 1) / max(max_rows - 1, 1)) for i in range(max_rows)})
    head, body, start = ["step"] + [name for _, name in CURVE_COLUMNS], [], 0
    for i in marks[:max_rows]:
        window = rows[start:i + 1]
        cells = [str(rows[i]["step"])]
        for key, _ in CURVE_COLUMNS:
            vals = [r[key] for r in (window if key in ("reward", "reasoning/words", "reasoning/think_closed_share")
                                     else [rows[i]]) if key in r]
            cells.append(_fmt(float(sum(vals) / len(vals))) if vals else "")
        body.append(cells)
        start = i + 1
    return head, body


def render(out: Path, title: str, info: dict[str, str], tables: dict[str, dict[str, dict[str, float]]],
           ks: Sequence[int], best_of_n: list[float], reasoning_lengths: list[int],
           examples: list[dict], notes: list[str], curves: list[dict] = (),
           curves_png: Path | None = None) -> tuple[str, str]:
    """Write plots under out/plots and return (markdown, html)."""
    plots = make_plots(out / "plots", tables, ks, best_of_n, reasoning_lengths)
    if curves_png is not None:
        (out / "plots").mkdir(parents=True, exist_ok=True)
        (out / "plots" / CURVES_PLOT).write_bytes(Path(curves_png).read_bytes())
        plots = [*plots, CURVES_PLOT]
    captions = {"main": "Full-catalogue ranking", "thinking_subset": "Thinking mode and the others on the same samples"}
    md = [f"# {title}", ""] + [f"- **{k}**: {v}" for k, v in info.items()] + [""]
    hp = [f"<h1>{html.escape(title)}</h1><ul>"] + [f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>"
                                                    for k, v in info.items()] + ["</ul>"]
    for key, rows in tables.items():
        if not rows:
            continue
        head, body = metrics_table(rows, ks)
        md += [f"## {captions.get(key, key)}", "", _md_table(head, body), ""]
        hp += [f"<h2>{html.escape(captions.get(key, key))}</h2>", _html_table(head, body)]
    if best_of_n:
        md += ["## Best-of-N (Recall@10 of the best of N sampled traces)", "",
               _md_table(["N"] + [str(i + 1) for i in range(len(best_of_n))], [["R@10"] + [_fmt(v) for v in best_of_n]]), ""]
    if curves:
        head, body = curves_table(list(curves))
        md += ["## GRPO curves (training)", "", _md_table(head, body), ""]
        hp += ["<h2>GRPO curves (training)</h2>", _html_table(head, body)]
    if reasoning_lengths:
        md += [f"Reasoning tokens: mean {sum(reasoning_lengths) / len(reasoning_lengths):.1f}, "
               f"max {max(reasoning_lengths)} over {len(reasoning_lengths)} traces.", ""]
    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
        hp += ["<h2>Notes</h2><ul>"] + [f"<li>{html.escape(n)}</li>" for n in notes] + ["</ul>"]
    if plots:
        md += ["## Plots", ""] + [f"![{p}](plots/{p})" for p in plots] + [""]
        hp += ["<h2>Plots</h2>"]
        for p in plots:
            data = base64.b64encode((out / "plots" / p).read_bytes()).decode()
            hp.append(f'<img alt="{p}" src="data:image/png;base64,{data}" style="max-width:100%">')
    if examples:
        md += ["## Examples", ""]
        hp += ["<h2>Examples</h2>"]
        for ex in examples:
            md_ex, html_ex = _example(ex)
            md += md_ex
            hp.append(html_ex)
    style = ("<style>body{font-family:sans-serif;max-width:1000px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}blockquote{color:#444}</style>")
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{style}</head>" \
           f"<body>{''.join(hp)}</body></html>"
    return "\n".join(md), page

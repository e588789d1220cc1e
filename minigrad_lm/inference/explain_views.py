"""Explanations as something to look at: terminal lines (coloured on a terminal), one
self-contained HTML report (inline CSS and SVG: it opens without a network), PNG heatmaps
(matplotlib) and JSON records with the raw numbers.

Colours: a token that pushes the explained output up is green, one that pushes it down red, in
proportion to its attribution over the largest one's size; attention probabilities shade from
white (0) to blue (1).
"""
from __future__ import annotations

import html
import io
import os
from typing import Any

import numpy as np

from ..io.files import atomic_write_bytes
from .explain import AttentionMap, Explanation

__all__ = ["html_report", "json_record", "summary", "terminal_lines", "write_pngs"]

UP, DOWN, ATTENTION = (46, 160, 67), (214, 39, 40), (31, 119, 180)
CELL = 16  # heatmap cell side in the HTML report, pixels
# Heatmap cells in one HTML report (about 150 bytes each) before per-head maps give way to
# per-layer means: a 12-layer, 12-head model on 100 tokens would otherwise write 200 MB.
MAX_HTML_CELLS = 100_000
LABEL_CHARS = 14  # longest axis label in a heatmap before it is cut


def _strengths(scores: np.ndarray) -> np.ndarray:
    """Scores over the largest magnitude, in [-1, 1] (all zeros stay zeros)."""
    top = float(np.abs(scores).max()) if scores.size else 0.0
    return scores / top if top > 0 else np.zeros_like(scores)


def _shade(strength: float) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(background, foreground) colours of a token with attribution strength in [-1, 1]."""
    base, a = (UP if strength >= 0 else DOWN), min(abs(strength), 1.0)
    bg = tuple(round(255 * (1 - a) + c * a) for c in base)
    return bg, ((255, 255, 255) if a > 0.6 else (0, 0, 0))


def _shown(token: str) -> str:
    """A token as one visible word: line breaks and tabs as escapes, blank as a middle dot."""
    text = token.replace("\n", "\\n").replace("\t", "\\t").strip(" ")
    return text or "\u00b7"


def summary(ex: Explanation) -> list[str]:
    """What the model did and how the attributions were made, a sentence a line."""
    if ex.output_ids is not None:
        lines = [f"output: {' '.join(_shown(t) for t in ex.output_tokens)} "
                 f"(p {ex.probability:.3g})"]
    else:
        others = ", ".join(f"{_shown(label)} {p:.3f}" for label, p in ex.alternatives)
        lines = [f"{ex.explains}: {_shown(ex.target_label)} (p {ex.probability:.3f}; {others})"]
    if ex.answer_tokens is not None:
        first, last = ex.answer_tokens
        lines.append(f"answer tokens {first}..{last}: "
                     f"{' '.join(_shown(t) for t in ex.tokens[first:last + 1])}")
    if ex.note:
        lines.append(ex.note)
    a = ex.attribution
    if a is None:
        return lines
    output = ("start + end logit of the answer span" if ex.explains == "answer span"
              else f"logit of the {ex.explains}")
    if a.method == "grad_x_input":
        lines.append(f"gradient x input of the {output} {_shown(ex.target_label)} "
                     f"({a.output:.4f}); attributions sum to {a.scores.sum():.4f}")
    else:
        lines.append(
            f"integrated gradients ({a.steps} steps from {_shown(a.baseline)}) of the {output} "
            f"{_shown(ex.target_label)}: attributions sum to {a.scores.sum():.4f}; f(x) "
            f"{a.output:.4f} - f(baseline) {a.baseline_output:.4f} = "
            f"{a.output - a.baseline_output:.4f} (completeness gap {a.completeness_gap:+.2e})")
    return lines


# --------------------------------------------------------------------------------------------
# terminal


def _ansi(text: str, bg: tuple[int, int, int], fg: tuple[int, int, int]) -> str:
    return f"\x1b[48;2;{bg[0]};{bg[1]};{bg[2]}m\x1b[38;2;{fg[0]};{fg[1]};{fg[2]}m{text}\x1b[0m"


def _shaded_tokens(tokens: list[str], strengths: np.ndarray) -> str:
    return " ".join(_ansi(_shown(t), *_shade(float(s))) for t, s in zip(tokens, strengths))


def terminal_lines(ex: Explanation, color: bool) -> list[str]:
    """The summary, then the tokens: shaded in place with ``color``, else one ``token<TAB>
    score`` line each. A translation shows, for each output token, the source shaded by the
    cross-attention averaged over layers and heads (else its most attended source token)."""
    lines = summary(ex)
    if ex.attribution is not None:
        scores = ex.attribution.scores
        if color:
            lines.append(_shaded_tokens(ex.tokens, _strengths(scores)))
        else:
            lines += ["token\tattribution"] + [f"{_shown(t)}\t{s:.6f}"
                                              for t, s in zip(ex.tokens, scores)]
    if ex.output_ids is not None:
        mean = ex.cross_attention().mean(axis=(0, 1))  # (output, source)
        if not color:
            lines.append("output token\tmost attended source token\tmean attention")
        for out, row in zip(ex.output_tokens, mean):
            if color:
                lines.append(f"{_shown(out):>{LABEL_CHARS}} <- "
                             f"{_shaded_tokens(ex.tokens, row / max(row.max(), 1e-12))}")
            else:
                j = int(row.argmax())
                lines.append(f"{_shown(out)}\t{_shown(ex.tokens[j])}\t{row[j]:.4f}")
    return lines


# --------------------------------------------------------------------------------------------
# HTML

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 80em; }
section { border-top: 1px solid #ccc; padding-top: 1em; margin-top: 2em; }
.text { font-size: 1.1em; font-style: italic; }
.tokens { line-height: 2.2; font-family: ui-monospace, monospace; }
.tok, .out { padding: 0.15em 0.3em; border-radius: 0.2em; margin-right: 0.15em; }
.out { background: #eee; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; }
svg text { font-family: ui-monospace, monospace; font-size: 10px; }
.legend { font-size: 0.85em; color: #555; }
"""


def _css_rgb(c: tuple[int, int, int]) -> str:
    return f"rgb({c[0]},{c[1]},{c[2]})"


def _token_spans(tokens: list[str], scores: np.ndarray | None) -> str:
    if scores is None:
        return "".join(f'<span class="out">{html.escape(_shown(t))}</span>' for t in tokens)
    spans = []
    for token, score, strength in zip(tokens, scores, _strengths(scores)):
        bg, fg = _shade(float(strength))
        spans.append(f'<span class="tok" title="{score:.6g}" style="background:{_css_rgb(bg)};'
                     f'color:{_css_rgb(fg)}">{html.escape(_shown(token))}</span>')
    return "".join(spans)


def _label(token: str) -> str:
    text = _shown(token)
    return html.escape(text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "\u2026")


def _heatmap_svg(probs: np.ndarray, rows: list[str], cols: list[str]) -> str:
    """An SVG grid of probs (rows x cols) with the tokens along both axes; each cell's title
    holds its value."""
    left = 7 * min(LABEL_CHARS, max(len(_shown(t)) for t in rows)) + 8
    top = 7 * min(LABEL_CHARS, max(len(_shown(t)) for t in cols)) + 8
    width, height = left + CELL * len(cols), top + CELL * len(rows)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">']
    for j, col in enumerate(cols):
        x = left + CELL * j + CELL // 2 + 3
        parts.append(f'<text x="{x}" y="{top - 4}" transform="rotate(-60 {x} {top - 4})">'
                     f'{_label(col)}</text>')
    for i, row in enumerate(rows):
        y = top + CELL * i
        parts.append(f'<text x="{left - 4}" y="{y + CELL - 4}" text-anchor="end">'
                     f'{_label(row)}</text>')
        for j, p in enumerate(probs[i]):
            a = float(np.clip(p, 0.0, 1.0))
            fill = tuple(round(255 * (1 - a) + c * a) for c in ATTENTION)
            parts.append(f'<rect x="{left + CELL * j}" y="{y}" width="{CELL}" height="{CELL}" '
                         f'fill="{_css_rgb(fill)}"><title>{_label(row)} \u2192 {_label(cols[j])}'
                         f": {p:.4f}</title></rect>")
    parts.append("</svg>")
    return "".join(parts)


def _figure(caption: str, probs: np.ndarray, rows: list[str], cols: list[str]) -> str:
    return (f"<figure>{_heatmap_svg(probs, rows, cols)}<figcaption>{html.escape(caption)}"
            "</figcaption></figure>")


def _head_cells(items: list[tuple[str, Explanation]]) -> int:
    return sum(m.probs.size for _, ex in items for m in ex.attention)


def _attention_html(ex: Explanation, per_head: bool) -> str:
    """Cross-attention first (a translation's averaged map leads), then each layer: its heads
    (with ``per_head``) and their mean."""
    maps = sorted(ex.attention, key=lambda m: m.kind != "cross")
    parts = []
    cross = [m for m in maps if m.kind == "cross"]
    if cross:
        parts.append("<h3>Cross-attention, averaged over layers and heads</h3>")
        parts.append(_figure("output token (row) over source token (column)",
                             ex.cross_attention().mean(axis=(0, 1)), ex.output_tokens,
                             ex.tokens))
    for m in maps:
        rows, cols = ex.labels(m.queries), ex.labels(m.keys)
        parts.append(f"<h3>{html.escape(m.name)}: {m.kind}-attention, {m.queries} (rows) over "
                     f"{m.keys} (columns)</h3>")
        if per_head:
            parts += [_figure(f"head {h}", m.probs[h], rows, cols)
                      for h in range(len(m.probs))]
        parts.append(_figure("mean over heads", m.probs.mean(axis=0), rows, cols))
    return "".join(parts)


def html_report(title: str, items: list[tuple[str, Explanation]]) -> str:
    """One HTML page (no scripts, no external resources) with a section per (text,
    explanation): the summary, the tokens shaded by attribution (hover: the score), an
    attention heatmap per layer and head (hover: the probability); beyond MAX_HTML_CELLS
    cells, one per layer (the mean of its heads), as the page says."""
    per_head = _head_cells(items) <= MAX_HTML_CELLS
    note = "" if per_head else (
        f" The {_head_cells(items):,} attention probabilities are too many for a page: each "
        "layer shows the mean of its heads (--png and --json have every head).")
    sections = []
    for text, ex in items:
        scores = None if ex.attribution is None else ex.attribution.scores
        body = [f'<p class="text">{html.escape(text)}</p>']
        body += [f"<p>{html.escape(line)}</p>" for line in summary(ex)]
        if scores is not None:
            body.append('<p class="legend">green: raises the explained logit; red: lowers it '
                        '(hover a token for its attribution)</p>')
        body.append(f'<p class="tokens">{_token_spans(ex.tokens, scores)}</p>')
        if ex.output_ids is not None:
            body.append(f'<p class="tokens">output: {_token_spans(ex.output_tokens, None)}'
                        "</p>")
        body.append(_attention_html(ex, per_head))
        sections.append(f"<section>{''.join(body)}</section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>"
            '<p class="legend">Attention cells shade from white (0) to blue (1); hover a cell '
            f"for its probability.{note}</p>{''.join(sections)}</body></html>\n")


# --------------------------------------------------------------------------------------------
# JSON


def _map_record(m: AttentionMap) -> dict[str, Any]:
    return {"name": m.name, "kind": m.kind, "queries": m.queries, "keys": m.keys,
            "probs": m.probs.tolist()}


def json_record(text: str, ex: Explanation) -> dict[str, Any]:
    """The explanation's raw numbers; attention probs as [head][query][key]."""
    record: dict[str, Any] = {
        "text": text, "explains": ex.explains, "tokens": ex.tokens, "ids": ex.ids.tolist(),
        "target": ex.target, "target_label": ex.target_label, "probability": ex.probability,
        "alternatives": [{"label": label, "probability": p} for label, p in ex.alternatives],
        "attention": [_map_record(m) for m in ex.attention],
    }
    if ex.answer_tokens is not None:
        record["answer_tokens"] = list(ex.answer_tokens)
    if ex.note:
        record["note"] = ex.note
    a = ex.attribution
    if a is not None:
        record["attribution"] = {
            "method": a.method, "steps": a.steps, "scores": a.scores.tolist(),
            "output": a.output, "baseline_output": a.baseline_output,
            "completeness_gap": a.completeness_gap}
    if ex.output_ids is not None:
        record.update(output_ids=ex.output_ids.tolist(), output_tokens=ex.output_tokens,
                      output_probs=ex.output_probs.tolist(),
                      cross_attention_mean=ex.cross_attention().mean(axis=(0, 1)).tolist())
    return record


# --------------------------------------------------------------------------------------------
# PNG


def _plot_map(ax, probs: np.ndarray, rows: list[str], cols: list[str], title: str) -> None:
    ax.imshow(probs, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(cols)), [_shown(t)[:LABEL_CHARS] for t in cols], rotation=60,
                  ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), [_shown(t)[:LABEL_CHARS] for t in rows], fontsize=7)
    ax.set_title(title, fontsize=9)


def _summary_png(ex: Explanation, path: str, plt) -> None:
    """Attributions as bars (or a translation's mean cross-attention) above the mean
    attention of each layer's heads."""
    cross = [m for m in ex.attention if m.kind == "cross"]
    layers = cross or ex.attention
    n = len(ex.tokens)
    fig = plt.figure(figsize=(max(6.0, 0.45 * n + 2) * (1 + (len(layers) > 1)) / 1.4,
                              3.0 + 0.3 * max(n, len(ex.output_tokens))), dpi=100)
    grid = fig.add_gridspec(2, max(1, len(layers)), height_ratios=(1, 2))
    top = fig.add_subplot(grid[0, :])
    if ex.attribution is not None:
        scores = ex.attribution.scores
        top.bar(range(n), scores, color=["#%02x%02x%02x" % (UP if s >= 0 else DOWN)
                                         for s in scores])
        top.axhline(0, color="#888", linewidth=0.8)
        top.set_xticks(range(n), [_shown(t) for t in ex.tokens], rotation=60, ha="right",
                       fontsize=8)
        a = ex.attribution
        how = (f"integrated gradients, {a.steps} steps from {_shown(a.baseline)}, completeness "
               f"gap {a.completeness_gap:+.1e}" if a.method == "integrated_gradients"
               else "gradient x input")
        top.set_title(f"{summary(ex)[0]}\n{how}", fontsize=9)
        top.set_ylabel("attribution", fontsize=8)
    else:
        _plot_map(top, ex.cross_attention().mean(axis=(0, 1)), ex.output_tokens, ex.tokens,
                  "cross-attention, mean over layers and heads")
    for i, m in enumerate(layers):
        _plot_map(fig.add_subplot(grid[1, i]), m.probs.mean(axis=0), ex.labels(m.queries),
                  ex.labels(m.keys), f"{m.name}: mean over heads")
    _save(fig, path, plt)


def _save(fig, path: str, plt) -> None:
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    atomic_write_bytes(path, png.getvalue())


def _heads_png(ex: Explanation, m: AttentionMap, path: str, plt) -> None:
    heads = len(m.probs)
    rows, cols = ex.labels(m.queries), ex.labels(m.keys)
    side = 1.0 + 0.22 * max(len(rows), len(cols))
    fig, axes = plt.subplots(1, heads, figsize=(side * heads, side + 0.8), dpi=100,
                             squeeze=False)
    for h, ax in enumerate(axes[0]):
        _plot_map(ax, m.probs[h], rows, cols, f"{m.name} head {h}")
    _save(fig, path, plt)


def write_pngs(ex: Explanation, folder: str, stem: str) -> list[str]:
    """``stem.png`` (the summary) and ``stem_<layer>.png`` (every head of each attention
    layer) in ``folder``; returns their paths. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    paths = [os.path.join(folder, f"{stem}.png")]
    _summary_png(ex, paths[0], plt)
    for m in ex.attention:
        paths.append(os.path.join(folder, f"{stem}_{m.name.replace('.', '_')}.png"))
        _heads_png(ex, m, paths[-1], plt)
    return paths

"""`semid report`: one self-contained HTML page (pictures inlined as PNG) about a quantizer or an ID table.

Sections: summary metrics; codebook usage per level; collision bucket sizes; training curves (when the
model directory holds a ``metrics.jsonl``); a 2-D map (PCA) of item embeddings coloured by first-level
code; sample items per ID prefix (titles when a catalogue is given).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from semid._utils import atomic_path
from semid.errors import SemidError
from semid.quantize.metrics import quality_report, row_keys


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return '<img alt="figure" src="data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode() + '">'


def _usage_figure(codes: np.ndarray, sizes: list[int]) -> str:
    import matplotlib.pyplot as plt

    L = codes.shape[1]
    fig, axes = plt.subplots(1, L, figsize=(4.2 * L, 3.0), squeeze=False)
    for level in range(L):
        K = sizes[level] if level < len(sizes) else int(codes[:, level].max()) + 1
        counts = np.sort(np.bincount(codes[:, level], minlength=K))[::-1]
        ax = axes[0, level]
        ax.bar(np.arange(K), counts, width=1.0, color="#3b6ea8")
        ax.axhline(len(codes) / K, color="#c44", lw=1, ls="--", label="uniform")
        ax.set_title(f"level {level}: {int((counts > 0).sum())}/{K} codes used")
        ax.set_xlabel("code (sorted by count)")
        ax.set_ylabel("items")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _collision_figure(codes: np.ndarray) -> str:
    import matplotlib.pyplot as plt

    _, counts = np.unique(row_keys(codes), return_counts=True)
    sizes, n_ids = np.unique(counts, return_counts=True)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(sizes, n_ids, color="#3b6ea8")
    ax.set_yscale("log")
    ax.set_xlabel("items sharing one ID (before dedup)")
    ax.set_ylabel("number of IDs")
    ax.set_title(f"collision buckets: largest {int(counts.max())}")
    fig.tight_layout()
    return _png(fig)


def _curves_figure(metrics_path: Path) -> str | None:
    import matplotlib.pyplot as plt

    rows = []
    for line in metrics_path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    if not rows:
        return None
    keys = [
        k for k in rows[-1] if k not in ("epoch", "step", "time") and isinstance(rows[-1][k], (int, float))
    ]
    keys = keys[:8]
    if not keys:
        return None
    x = [r.get("epoch", i) for i, r in enumerate(rows)]
    cols = min(4, len(keys))
    nrows = -(-len(keys) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 2.6 * nrows), squeeze=False)
    for ax, k in zip(axes.ravel(), keys, strict=False):
        ax.plot(x, [r.get(k, np.nan) for r in rows], color="#3b6ea8")
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
    for ax in axes.ravel()[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def _map_figure(X: np.ndarray, first: np.ndarray, seed: int = 0) -> str:
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(X), min(len(X), 5000), replace=False))
    Y = X[idx].astype(np.float64)
    Y -= Y.mean(0)
    _, _, vt = np.linalg.svd(Y, full_matrices=False)
    P = Y @ vt[:2].T  # (m, 2) first two principal components
    codes = first[idx]
    top = np.argsort(-np.bincount(codes))[:10]
    fig, ax = plt.subplots(figsize=(6.5, 5))
    rest = ~np.isin(codes, top)
    ax.scatter(P[rest, 0], P[rest, 1], s=3, c="#cccccc", label="other codes")
    cmap = plt.get_cmap("tab10")
    for i, c in enumerate(top):
        m = codes == c
        ax.scatter(P[m, 0], P[m, 1], s=4, color=cmap(i), label=f"code {c}")
    ax.set_title("item embeddings (PCA), coloured by first-level code")
    ax.legend(fontsize=7, markerscale=3, loc="best")
    fig.tight_layout()
    return _png(fig)


def _samples_html(codes: np.ndarray, sids: list[str], item_ids: np.ndarray, titles: dict[str, str]) -> str:
    parts = []
    for depth in range(1, min(3, codes.shape[1])):
        keys = row_keys(codes[:, :depth])
        uniq, counts = np.unique(keys, return_counts=True)
        for key in uniq[np.argsort(-counts, kind="stable")][:4]:
            rows = np.flatnonzero(keys == key)
            prefix = "-".join(map(str, codes[rows[0], :depth].tolist()))
            items = "".join(
                f"<li><code>{html.escape(sids[r])}</code> {html.escape(str(item_ids[r]))}"
                f" {html.escape(titles.get(str(item_ids[r]), ''))}</li>"
                for r in rows[:6]
            )
            parts.append(
                f"<div class='group'><h4>prefix {prefix} ({len(rows):,} items)</h4><ul>{items}</ul></div>"
            )
    return "".join(parts)


def build_report(
    path: str | os.PathLike,
    output: str | os.PathLike,
    *,
    emb: str | os.PathLike | None = None,
    titles: dict[str, str] | None = None,
) -> Path:
    """Write the HTML report for a model directory or an ``ids.parquet``; returns the output path."""
    import matplotlib

    matplotlib.use("Agg")
    from semid.embed.store import read_embeddings
    from semid.ids.formats import format_ids
    from semid.ids.table import read_ids

    path = Path(path)
    titles = titles or {}
    X = item_ids = codes = None
    sizes: list[int] = []
    sids: list[str] = []
    metrics_path = None
    name = path.name
    if path.is_dir() and (path / "config.json").exists():
        from semid.quantize import load_quantizer

        model = load_quantizer(path, device="cpu")
        sizes = model.codebook_sizes_
        metrics_path = path / "metrics.jsonl"
        if emb is None:
            raise SemidError(f"{path} is a model directory: pass --emb EMBEDDINGS to measure it on items")
        if model.fusion_ is not None:
            raise SemidError(
                f"{path} was fitted on {model.fusion_.describe()}: report the IDs it assigned "
                "(semid assign --fuse ... -o ids.parquet; semid report ids.parquet --emb EMB)"
            )
        item_ids, X = read_embeddings(emb)
        if X.shape[1] != model.n_features_in_:
            raise SemidError(
                f"{emb}: {X.shape[1]} values per embedding, but {path} expects {model.n_features_in_}"
            )
        codes = model.encode(X)
        sids = format_ids(codes, "dash")
        X_hat = model.decode(codes)
        title = f"{model.model_type} model {name}"
    elif path.is_file() or path.is_dir():  # ids.parquet, or the part files of a streamed assign
        t = read_ids(path)
        if len(t.item_ids) == 0:
            raise SemidError(f"{path}: no items, nothing to report")
        codes, item_ids, sids = t.base_codes, t.item_ids, t.semantic_ids
        sizes = list(t.meta.get("codebook_sizes", []))
        X_hat = None
        if emb is not None:
            e_ids, X = read_embeddings(emb)
            pos = {str(i): j for j, i in enumerate(e_ids.tolist())}
            try:
                X = X[[pos[str(i)] for i in item_ids.tolist()]]
            except KeyError as e:
                raise SemidError(f"{emb}: no embedding for item {e.args[0]!r} of {path}") from None
        title = f"Semantic IDs {name}"
        model_dir = t.meta.get("model_dir")
        if model_dir and (Path(model_dir) / "metrics.jsonl").is_file():
            metrics_path = Path(model_dir) / "metrics.jsonl"
    else:
        raise SemidError(f"{path}: no such file or model directory")

    rep = quality_report(codes, codebook_sizes=sizes or None, X=X, X_hat=X_hat)
    summary = [
        ("items", f"{rep.n_items:,}"),
        ("unique IDs before dedup", f"{rep.unique_share:.4f} ({rep.n_unique:,})"),
        ("largest collision bucket", str(rep.max_collision)),
    ]
    if rep.reconstruction_error is not None:
        summary.append(("relative reconstruction error", f"{rep.reconstruction_error:.4f}"))
    for lv in rep.levels:
        summary.append(
            (
                f"level {lv['level']}",
                f"usage {lv['usage']:.3f}, perplexity {lv['perplexity']:.1f} of {lv['codebook_size']}",
            )
        )
    sections = [
        "<h2>Summary</h2><table>"
        + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in summary)
        + "</table>",
        "<h2>Codebook usage per level</h2>" + _usage_figure(codes, sizes),
        "<h2>Collision buckets</h2>" + _collision_figure(codes),
    ]
    if metrics_path is not None and metrics_path.is_file():
        curves = _curves_figure(metrics_path)
        if curves:
            sections.append("<h2>Training curves</h2>" + curves)
    if X is not None:
        sections.append("<h2>Item map</h2>" + _map_figure(X, codes[:, 0]))
    sections.append("<h2>Sample items per ID prefix</h2>" + _samples_html(codes, sids, item_ids, titles))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }}
h1 {{ font-size: 1.5rem; }} h2 {{ margin-top: 2rem; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; }} th, td {{ text-align: left; padding: .2rem .8rem; border-bottom: 1px solid #eee; }}
img {{ max-width: 100%; }} .group {{ display: inline-block; vertical-align: top; width: 48%; margin-right: 1%; }}
code {{ background: #f4f4f4; padding: 0 .2rem; }}
</style></head><body><h1>{html.escape(title)}</h1>
{"".join(sections)}
</body></html>
"""
    output = Path(output)
    with atomic_path(output) as tmp:
        tmp.write_text(page)
    return output

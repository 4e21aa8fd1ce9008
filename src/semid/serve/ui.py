"""The web page at ``/ui`` (Gradio): search, recommendations for a picked history, ID prefixes, the report.

Tabs:

- **Search**: a query box; results by the language model or by dense retrieval (the page says which);
- **Recommend**: a history picker (type to find items by title or id; pick several, oldest first) and the
  next items TIGER recommends for it;
- **Prefix**: the items whose Semantic ID starts with a prefix; every result elsewhere links here with its
  parent prefix (``/ui/?prefix=12-4-9``), so one click shows the items that share it;
- **Model**: the ``semid report`` pictures of the IDs (codebook usage, collisions, item map) and the
  recommender's training curves, served by ``/report``.

The page calls the :class:`~semid.serve.service.Service` in-process (no HTTP round trip) and shows request
problems as one line in place of the results.
"""

from __future__ import annotations

import html
import os
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no calls home

import gradio as gr  # noqa: E402

from semid.errors import SemidError  # noqa: E402
from semid.serve.service import ItemScore, Service  # noqa: E402

__all__ = ["build_ui", "mount_ui"]

MAX_CHOICES = 20_000  # the history picker lists this many items; other ids can still be typed in full

CSS = """
.semid-results { width: 100%; border-collapse: collapse; font-size: 0.95rem; }
.semid-results th, .semid-results td { text-align: left; padding: 0.3rem 0.6rem; border-bottom: 1px solid #e5e5e5; }
.semid-results code { background: #f3f3f3; padding: 0 0.25rem; border-radius: 3px; }
.semid-note { color: #555; margin: 0.3rem 0; }
.semid-error { color: #b00020; font-weight: 600; }
"""


def _prefix_of(semantic_id: str | None) -> str | None:
    if not semantic_id or "-" not in semantic_id:
        return None
    return semantic_id.rsplit("-", 1)[0]


def results_html(items: list[ItemScore], note: str, service: Service, *, element_id: str) -> str:
    """A results table: rank, title, Semantic ID, a link to the items sharing its prefix, score."""
    rows = []
    for rank, it in enumerate(items, 1):
        prefix = _prefix_of(it.semantic_id)
        link = ""
        if prefix is not None:
            codes = [int(c) for c in prefix.split("-")]
            n = len(service.catalogue.rows_under(codes))
            link = f'<a class="prefix-link" href="/ui/?prefix={html.escape(prefix)}">{html.escape(prefix)}-* ({n})</a>'
        rows.append(
            f'<tr class="result"><td>{rank}</td><td class="title">{html.escape(it.title or "")}</td>'
            f'<td><code class="sid">{html.escape(it.semantic_id or "")}</code></td><td>{link}</td>'
            f"<td>{it.score:.3f}</td><td><code>{html.escape(it.item_id)}</code></td></tr>"
        )
    head = (
        "<tr><th>#</th><th>title</th><th>Semantic ID</th><th>same prefix</th><th>score</th><th>item</th></tr>"
    )
    return (
        f'<div id="{element_id}"><p class="semid-note">{html.escape(note)}</p>'
        f'<table class="semid-results">{head}{"".join(rows)}</table></div>'
    )


def error_html(message: str, *, element_id: str) -> str:
    return f'<div id="{element_id}"><p class="semid-error">{html.escape(message)}</p></div>'


def build_ui(service: Service) -> gr.Blocks:
    """The Gradio Blocks of the page (not yet mounted)."""
    cat = service.catalogue
    info = service.info()

    def do_search(query: str, k: float) -> str:
        try:
            res = service.search(query or "", int(k))
        except SemidError as e:
            return error_html(str(e), element_id="search-output")
        note = f"{len(res.items)} items for {query.strip()!r} by " + (
            "the language model (lm)" if res.method == "lm" else "dense retrieval (dense)"
        )
        return results_html(res.items, note, service, element_id="search-output")

    def do_recommend(history: list[str] | None, k: float) -> str:
        history = [h for h in (history or []) if h]
        if not history:
            return error_html("pick at least one item for the history", element_id="rec-output")
        try:
            items = service.recommend(history, k=int(k))
        except SemidError as e:
            return error_html(str(e), element_id="rec-output")
        model = service.recommender.model_type if service.recommender else "?"
        note = f"{len(items)} items {model} recommends after a history of {len(history)}"
        return results_html(items, note, service, element_id="rec-output")

    def do_prefix(prefix: str) -> str:
        if not (prefix or "").strip():
            return ""
        try:
            res = service.prefix(prefix.strip(), limit=200)
        except SemidError as e:
            return error_html(str(e), element_id="prefix-output")
        items = [ItemScore(i["item_id"], i["semantic_id"], i["title"], 0.0) for i in res["items"]]
        shown = f" (first {len(items)})" if len(items) < res["n_items"] else ""
        note = f"{res['n_items']} items share the prefix {res['prefix']}{shown}"
        return results_html(items, note, service, element_id="prefix-output")

    def on_load(request: gr.Request):  # /ui/?prefix=12-4 opens the Prefix tab on that prefix
        prefix = (request.query_params.get("prefix") or "").strip() if request is not None else ""
        if not prefix:
            return gr.update(), gr.update(), gr.update()
        return prefix, do_prefix(prefix), gr.Tabs(selected="prefix")

    choices = [
        (f"{cat.title(r) or cat.item_ids[r]} · {cat.item_ids[r]}", str(cat.item_ids[r]))
        for r in range(min(len(cat), MAX_CHOICES))
    ]
    with gr.Blocks(title="semid", analytics_enabled=False) as blocks:
        gr.Markdown(
            f"## semid: Semantic IDs\n{info['items']:,} items · recommend: {info['recommend'] or 'none'} · "
            f"search: {info['search'] or 'none'} · [API docs](/docs)"
        )
        with gr.Tabs() as tabs:
            with gr.Tab("Search", id="search"):
                with gr.Row():
                    query = gr.Textbox(
                        label="Search", placeholder="e.g. a matte red lipstick", elem_id="query", scale=4
                    )
                    k_search = gr.Slider(1, min(50, len(cat)), value=min(10, len(cat)), step=1, label="k")
                search_btn = gr.Button("Search", variant="primary", elem_id="search-button")
                search_out = gr.HTML(elem_id="search-results")
            with gr.Tab("Recommend", id="recommend"):
                with gr.Row():
                    history = gr.Dropdown(
                        choices=choices,
                        multiselect=True,
                        filterable=True,
                        allow_custom_value=len(cat) > MAX_CHOICES,
                        label="History (type to find items; oldest first)",
                        elem_id="history",
                        scale=4,
                    )
                    k_rec = gr.Slider(1, min(50, len(cat)), value=min(10, len(cat)), step=1, label="k")
                rec_btn = gr.Button("Recommend", variant="primary", elem_id="recommend-button")
                rec_out = gr.HTML(elem_id="recommend-results")
            with gr.Tab("Prefix", id="prefix"):
                prefix_box = gr.Textbox(label="Semantic ID prefix", placeholder="e.g. 12-4", elem_id="prefix")
                prefix_out = gr.HTML(elem_id="prefix-results")
            with gr.Tab("Model", id="model"):
                gr.HTML(
                    '<iframe id="report" src="/report" title="semid report" '
                    'style="width:100%;height:1400px;border:0"></iframe>'
                )
        query.submit(do_search, [query, k_search], search_out)
        search_btn.click(do_search, [query, k_search], search_out)
        rec_btn.click(do_recommend, [history, k_rec], rec_out)
        prefix_box.submit(do_prefix, [prefix_box], prefix_out)
        blocks.load(on_load, None, [prefix_box, prefix_out, tabs])
    return blocks


def mount_ui(app: Any, service: Service, path: str = "/ui") -> Any:
    """Mount the page on a FastAPI ``app`` at ``path``; returns the app."""
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    return gr.mount_gradio_app(
        app, build_ui(service), path=path, ssr_mode=False, theme=theme, css=CSS, footer_links=["api"]
    )

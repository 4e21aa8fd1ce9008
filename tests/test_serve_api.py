"""`semid.serve`: the HTTP API in-process (TestClient), every endpoint's answers and its 4xx messages."""

from __future__ import annotations

import asyncio
import pickle
import shutil

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from conftest import WordHashEmbedder, save_scratch_llm
from semid.cli import main
from semid.errors import SemidError
from semid.serve.api import create_app
from semid.serve.batching import MicroBatcher
from semid.serve.service import RequestError, ServeConfig, Service


@pytest.fixture(scope="module")
def service(serve_dir, one_torch_thread) -> Service:
    return Service.load(serve_dir, embedder=WordHashEmbedder())


@pytest.fixture(scope="module")
def client(service):
    with TestClient(create_app(service, ui=False)) as c:
        yield c


def history_of(service: Service, user: int = 0) -> list[str]:
    data = service.recommender.data
    s = data.sequences
    return [str(data.item_ids[i]) for i in s.items[s.offsets[user] : s.offsets[user + 1]]]


# -- POST /recommend --------------------------------------------------------------------------------------


def test_recommend_returns_k_catalogue_items_best_first(client, service):
    history = history_of(service)[:3]
    r = client.post("/recommend", json={"history": history, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiger" and body["history_length"] == 3 and body["user_id"] is None
    items = body["items"]
    assert len(items) == 5 and len({i["item_id"] for i in items}) == 5
    cat = service.catalogue
    for it in items:  # every answer is a real item, shown with its own Semantic ID and title
        row = cat.index[it["item_id"]]
        assert it["semantic_id"] == cat.semantic_id(row) and it["title"] == cat.title(row)
    scores = [it["score"] for it in items]
    assert scores == sorted(scores, reverse=True) and all(s <= 0 for s in scores)  # log-probabilities


def test_recommend_is_the_models_constrained_beam_search(client, service):
    from semid.rec.data import histories_batch

    history = history_of(service, 3)
    rows = np.array([service.catalogue.index[h] for h in history])
    model = service.recommender.model
    top, _ = model.recommend(histories_batch([rows]), 4, beam_size=10)
    r = client.post("/recommend", json={"history": history, "k": 4})
    assert [i["item_id"] for i in r.json()["items"]] == [str(service.catalogue.item_ids[i]) for i in top[0]]


def test_recommend_for_a_user_reads_their_stored_history(client, service):
    user = str(service.recommender.data.user_ids[2])
    by_user = client.post("/recommend", json={"user_id": user, "k": 3}).json()
    assert by_user["history_length"] == len(history_of(service, 2)) and by_user["user_id"] == user
    explicit = client.post("/recommend", json={"history": history_of(service, 2), "user_id": user, "k": 3})
    assert explicit.json()["items"] == by_user["items"]


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"history": ["nope"], "k": 3}, 404, "item 'nope' is not in the catalogue (150 items)"),
        ({"user_id": "ghost"}, 404, "user 'ghost' is not in this run (200 users)"),
        ({"history": ["D00001"], "k": 0}, 422, "k: Input should be greater than or equal to 1"),
        ({"history": ["D00001"], "k": 101}, 422, "k: Input should be less than or equal to 100"),
        ({"history": ["D00001"], "k": "ten"}, 422, "k: Input should be a valid integer"),
        ({"history": ["D00001"], "k": True}, 422, "k: Input should be a valid integer"),  # not k=1
        ({"k": 3}, 422, "give a history (item ids, oldest first) or a user_id"),
        ({"history": []}, 422, "the history is empty; give at least one item id"),
        ({"history": [""]}, 422, "history.0: String should have at least 1 character"),
        ({"history": ["D00001"] * 201}, 422, "history: List should have at most 200 items after validation"),
        ({"history": ["D00001"], "extra": 1}, 422, "extra: Extra inputs are not permitted"),
    ],
)
def test_recommend_rejects_bad_requests_with_one_clear_line(client, body, status, detail):
    r = client.post("/recommend", json=body)
    assert r.status_code == status and r.json()["detail"].startswith(detail), r.json()


def test_malformed_json_is_422(client):
    r = client.post("/recommend", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"] == (
        "the body is not valid JSON: Expecting property name enclosed in double quotes (character 1)"
    )


def test_k_above_the_catalogue_size_is_refused(service):
    small = Service(service.catalogue, service.recommender, config=ServeConfig(max_k=1000))
    with pytest.raises(
        RequestError, match=r"k=151 should be between 1 and 150 \(the catalogue has 150 items\)"
    ):
        small.recommend(history_of(service)[:2], k=151)


# -- POST /search -------------------------------------------------------------------------------------------


def test_dense_search_finds_the_item_by_its_title_and_says_so(client, service):
    title = service.catalogue.title(17)
    r = client.post("/search", json={"query": f"  {title} ", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == "dense" and body["query"] == title
    assert body["items"][0]["item_id"] == str(service.catalogue.item_ids[17])
    assert body["items"][0]["score"] == pytest.approx(1.0, abs=1e-5)  # cosine of identical vectors
    scores = [i["score"] for i in body["items"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"query": ""}, "query: String should have at least 1 character"),
        ({"query": "   "}, "the query is empty: ask for something, e.g. 'a matte red lipstick'"),
        ({"query": "x" * 501}, "query: String should have at most 500 characters"),
        ({"query": "lipstick", "k": -1}, "k: Input should be greater than or equal to 1"),
        ({}, "query: Field required"),
    ],
)
def test_search_rejects_bad_requests(client, body, detail):
    r = client.post("/search", json=body)
    assert (r.status_code, r.json()) == (422, {"detail": detail})


def test_a_history_weight_that_is_not_a_number_is_refused_as_such(client):
    body = b'{"query": "lipstick", "history_weight": NaN}'  # Python's json module writes and reads NaN
    r = client.post("/search", content=body, headers={"content-type": "application/json"})
    assert (r.status_code, r.json()) == (422, {"detail": "history_weight: Input should be a finite number"})


def test_search_by_a_language_model_when_one_is_trained(serve_dir, tmp_path, one_torch_thread):
    service = Service.load(serve_dir, embedder=WordHashEmbedder())
    save_scratch_llm(serve_dir, tmp_path / "llm")
    lm = Service.load(serve_dir, llm=tmp_path / "llm")
    with TestClient(create_app(lm, ui=False)) as c:
        body = c.post("/search", json={"query": "a matte red lipstick", "k": 4}).json()
        assert body["method"] == "lm" and c.get("/health").json()["search"] == "lm"
    found = [i["item_id"] for i in body["items"]]
    assert len(set(found)) == 4 and all(f in service.catalogue.index for f in found)  # distinct real items
    assert all(
        i["semantic_id"] == service.catalogue.semantic_id(service.catalogue.index[i["item_id"]])
        for i in body["items"]
    )


def test_lm_search_answers_with_the_brand_and_price_a_request_states(serve_dir, tmp_path, one_torch_thread):
    # An untrained model ranks items at random; the filter still puts first every item of the stated brand
    # under the stated price (here fewer than k: the rest are the model's best others), and switching it
    # off (ServeConfig.search_filter) gives the model's own ranking back.
    from semid.data import load_dataset

    table = load_dataset([serve_dir / "data"]).catalogue.table
    brand, price = table["brand"].to_pylist(), table["price"].to_pylist()
    wanted = {str(i) for i, b, p in zip(table["item_id"].to_pylist(), brand, price, strict=True)
              if b == "Petal Lab" and p is not None and p < 10}  # fmt: skip
    assert 0 < len(wanted) < 10
    save_scratch_llm(serve_dir, tmp_path / "llm", spread=2.0, facts=True)
    query = {"query": "anything by petal lab under $10", "k": 10}
    with TestClient(create_app(Service.load(serve_dir, llm=tmp_path / "llm"), ui=False)) as c:
        found = [i["item_id"] for i in c.post("/search", json=query).json()["items"]]
    assert set(found[: len(wanted)]) == wanted and len(set(found)) == 10
    off = Service.load(serve_dir, llm=tmp_path / "llm", config=ServeConfig(search_filter=False))
    with TestClient(create_app(off, ui=False)) as c:
        plain = [i["item_id"] for i in c.post("/search", json=query).json()["items"]]
    assert set(plain[: len(wanted)]) != wanted


def test_personalised_search_answers_with_the_brand_and_price_a_request_states(
    serve_dir, tmp_path, one_torch_thread
):
    # The same filter holds when a history joins the request (query model + TIGER in one beam search).
    from semid.data import load_dataset

    table = load_dataset([serve_dir / "data"]).catalogue.table
    wanted = {str(i) for i, b, p in zip(table["item_id"].to_pylist(), table["brand"].to_pylist(),
              table["price"].to_pylist(), strict=True) if b == "Petal Lab" and p is not None and p < 10}  # fmt: skip
    save_scratch_llm(serve_dir, tmp_path / "llm", spread=2.0, facts=True)
    service = Service.load(serve_dir, llm=tmp_path / "llm")
    assert service.info()["search_filter"] == "on"
    history = [str(i) for i in service.catalogue.item_ids[:3]]
    query = {"query": "anything by petal lab under $10", "k": 10, "history": history}
    with TestClient(create_app(service, ui=False)) as c:
        body = c.post("/search", json=query).json()
    assert body["method"] == "lm+history"
    found = [i["item_id"] for i in body["items"]]
    assert set(found[: len(wanted)]) == wanted and len(set(found)) == 10


def test_health_says_whether_lm_search_filters(serve_dir, tmp_path, one_torch_thread):
    # "unavailable": a model whose items.parquet keeps no brand or price (prepared before it kept them)
    save_scratch_llm(serve_dir, tmp_path / "old", spread=2.0)
    save_scratch_llm(serve_dir, tmp_path / "new", spread=2.0, facts=True)
    states = {
        "old": Service.load(serve_dir, llm=tmp_path / "old").info()["search_filter"],
        "new": Service.load(serve_dir, llm=tmp_path / "new").info()["search_filter"],
        "off": Service.load(serve_dir, llm=tmp_path / "new", config=ServeConfig(search_filter=False)).info()[
            "search_filter"
        ],
        "dense": Service.load(serve_dir, embedder=WordHashEmbedder()).info()["search_filter"],
    }
    assert states == {"old": "unavailable", "new": "on", "off": "off", "dense": None}
    with TestClient(create_app(Service.load(serve_dir, llm=tmp_path / "old"), ui=False)) as c:
        assert c.get("/health").json()["search_filter"] == "unavailable"


def test_a_language_model_without_safetensors_weights_is_refused(serve_dir, tmp_path):
    llm = tmp_path / "llm"
    llm.mkdir()
    (llm / "semid_llm.json").write_text("{}")
    (llm / "pytorch_model.bin").write_bytes(pickle.dumps({"weights": 1}))
    with pytest.raises(SemidError, match="no .safetensors weights; the server loads no pickled checkpoints"):
        Service.load(serve_dir, llm=llm, embedder=WordHashEmbedder())


# -- a directory without a recommender or without search ------------------------------------------------


def test_ids_only_directory_serves_the_catalogue_and_search_but_not_recommend(serve_dir, tmp_path):
    for name in ("ids.parquet", "embeddings.parquet"):
        shutil.copy(serve_dir / name, tmp_path / name)
    shutil.copytree(serve_dir / "data", tmp_path / "data")
    service = Service.load(tmp_path, embedder=WordHashEmbedder())
    with TestClient(create_app(service, ui=False)) as c:
        r = c.post("/recommend", json={"history": ["D00001"]})
        assert (r.status_code, r.json()["detail"]) == (
            503,
            "no recommendation model is loaded (serve a directory with a TIGER run)",
        )
        assert c.post("/search", json={"query": "lipstick", "k": 2}).json()["method"] == "dense"
        assert c.get("/items/D00001").json()["title"] == service.catalogue.title(1)  # titles from data/
        assert c.get("/health").json()["recommend"] is None


def test_no_search_method_is_503(service):
    bare = Service(service.catalogue, service.recommender)
    with TestClient(create_app(bare, ui=False)) as c:
        r = c.post("/search", json={"query": "lipstick"})
    assert r.status_code == 503 and r.json()["detail"].startswith("no search method is loaded")


def test_loading_a_directory_that_is_no_serving_directory_is_one_error(tmp_path):
    with pytest.raises(SemidError, match="found neither a run of `semid train`"):
        Service.load(tmp_path)
    with pytest.raises(SemidError, match="no such directory"):
        Service.load(tmp_path / "missing")


# -- GET /items, /ids, /prefixes ---------------------------------------------------------------------------


def test_item_by_id_shows_its_semantic_id_and_prefix_sizes(client, service):
    cat = service.catalogue
    r = client.get("/items/D00007")
    assert r.status_code == 200
    body = r.json()
    row = cat.index["D00007"]
    assert body["semantic_id"] == cat.semantic_id(row) == "-".join(map(str, body["codes"]))
    assert body["title"] == cat.title(row)
    first = body["codes"][0]
    assert body["prefixes"][0] == {"prefix": str(first), "n_items": int((cat.codes[:, 0] == first).sum())}
    assert len(body["prefixes"]) == cat.n_levels - 1


def test_semantic_id_to_item_in_any_spelling(client, service):
    item = client.get("/items/D00042").json()
    codes = item["codes"]
    angle = "".join(f"<{'abc'[lv]}_{c}>" for lv, c in enumerate(codes))
    for spelling in (item["semantic_id"], angle):
        r = client.get(f"/ids/{spelling}")
        assert r.status_code == 200 and r.json()["item_id"] == "D00042", spelling


@pytest.mark.parametrize(
    ("path", "status", "detail"),
    [
        ("/items/nope", 404, "item 'nope' is not in the catalogue (150 items)"),
        ("/items/" + "x" * 300, 422, "item_id: String should have at most 256 characters"),
        ("/ids/5-5-99", 404, "no item has the Semantic ID '5-5-99'"),
        ("/ids/1-2", 422, "'1-2' has 2 levels; Semantic IDs here have 3"),
        ("/ids/lipstick", 422, "'lipstick' is not a Semantic ID in any known format"),
        ("/ids/99999999999999999999999-0-0", 422, "'99999999999999999999999-0-0' is not a valid dash"),
        ("/prefixes/5-5-99", 404, "no item's Semantic ID starts with '5-5-99'"),
        ("/prefixes/1-2-3-4", 422, "the prefix '1-2-3-4' has 4 levels; IDs here have 3"),
        ("/prefixes/1?limit=0", 422, "limit: Input should be greater than or equal to 1"),
        ("/nowhere", 404, "Not Found"),
    ],
)
def test_lookups_answer_unknown_and_malformed_with_4xx(client, path, status, detail):
    r = client.get(path)
    assert r.status_code == status and r.json()["detail"].startswith(detail), r.json()


def test_prefix_lists_the_items_that_share_it(client, service):
    cat = service.catalogue
    prefix = client.get("/items/D00003").json()["prefixes"][-1]  # the parent of D00003's ID
    r = client.get(f"/prefixes/{prefix['prefix']}", params={"limit": 2})
    body = r.json()
    assert body["n_items"] == prefix["n_items"] and body["depth"] == cat.n_levels - 1
    assert len(body["items"]) == min(2, prefix["n_items"])
    assert all(i["semantic_id"].startswith(prefix["prefix"] + "-") for i in body["items"])
    assert "D00003" in [i["item_id"] for i in client.get(f"/prefixes/{prefix['prefix']}").json()["items"]]


# -- service endpoints, limits, schema ---------------------------------------------------------------------


def test_health_and_version(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["items"] == 150 and health["levels"] == 3
    assert (health["recommend"], health["search"], health["users"]) == ("tiger", "dense", 200)
    assert health["batching"]["enabled"] is True and health["batching"]["recommend"]["requests"] >= 1
    import semid

    version = client.get("/version").json()
    assert version["semid"] == semid.__version__ and version["torch"] == torch.__version__


def test_oversized_bodies_are_413_whether_announced_or_streamed(client):
    big = b'{"query": "' + b"x" * 70_000 + b'"}'
    r = client.post("/search", content=big, headers={"content-type": "application/json"})
    assert (r.status_code, r.json()) == (413, {"detail": "the request body is larger than 65,536 bytes"})

    def chunks():  # no Content-Length: counted as it arrives
        yield big[:40_000]
        yield big[40_000:]

    r = client.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_openapi_schema_documents_every_endpoint_and_the_limits(client):
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) == {
        "/recommend",
        "/search",
        "/items/{item_id}",
        "/ids/{semantic_id}",
        "/prefixes/{prefix}",
        "/report",
        "/health",
        "/version",
    }
    k = schema["components"]["schemas"]["RecommendRequest"]["properties"]["k"]
    assert (k["minimum"], k["maximum"], k["default"]) == (1, 100, 10)
    assert {"404", "422", "503"} <= set(schema["paths"]["/recommend"]["post"]["responses"])
    # no endpoint takes a file path: parameters are ids and numbers only
    params = {
        p["name"] for op in schema["paths"].values() for m in op.values() for p in m.get("parameters", [])
    }
    assert params == {"item_id", "semantic_id", "prefix", "limit"}


def test_report_page_has_the_id_pictures_and_the_training_curves(client):
    r = client.get("/report")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for section in (
        "Codebook usage per level",
        "Collision buckets",
        "Item map",
        "Recommender training (tiger)",
    ):
        assert f"<h2>{section}</h2>" in r.text
    assert r.text.count("data:image/png;base64,") == 4  # usage, collisions, map, TIGER curves


# -- batching ----------------------------------------------------------------------------------------------


def test_concurrent_requests_share_model_calls_and_get_their_own_answers(service):
    histories = [history_of(service, u)[:4] for u in range(24)]
    alone = [service.recommend(h, k=5) for h in histories]

    async def burst():
        app = create_app(service, ui=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            rs = await asyncio.gather(*(c.post("/recommend", json={"history": h, "k": 5}) for h in histories))
            stats = (await c.get("/health")).json()["batching"]["recommend"]
        return [r.json()["items"] for r in rs], stats

    answers, stats = asyncio.run(burst())
    assert stats["requests"] == 24 and stats["calls"] < 24 and stats["largest"] > 1
    for got, want in zip(answers, alone, strict=True):
        assert [g["item_id"] for g in got] == [w.item_id for w in want]
        assert [g["score"] for g in got] == pytest.approx([w.score for w in want], abs=1e-4)


def test_micro_batcher_groups_waiting_requests_and_max_batch_1_does_not():
    seen: list[int] = []

    def double(xs):
        seen.append(len(xs))
        return [2 * x for x in xs]

    async def run(batcher):
        return await asyncio.gather(*(batcher.submit(i) for i in range(10)))

    assert asyncio.run(run(MicroBatcher(double, max_batch=4, max_wait_ms=5))) == [2 * i for i in range(10)]
    assert seen == [4, 4, 2]
    seen.clear()
    asyncio.run(run(MicroBatcher(double, max_batch=1)))
    assert seen == [1] * 10


def test_micro_batcher_raises_a_failed_calls_error_in_each_request():
    def fail(xs):
        raise RuntimeError("model broke")

    async def run():
        b = MicroBatcher(fail, max_batch=8)
        return await asyncio.gather(*(b.submit(i) for i in range(3)), return_exceptions=True)

    assert [str(e) for e in asyncio.run(run())] == ["model broke"] * 3


# -- security basics and the CLI ---------------------------------------------------------------------------


def test_loading_never_unpickles(serve_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    service = Service.load(serve_dir, embedder=WordHashEmbedder())
    assert service.recommend(["D00001"], k=2)


@pytest.fixture
def fake_uvicorn(monkeypatch):
    """`semid serve` up to the point where uvicorn would start: what it was given is recorded."""
    import uvicorn

    import semid.serve.service as service_module

    calls: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.update(kw, app=app))
    real_load = service_module.Service.load.__func__
    monkeypatch.setattr(  # the test data's embeddings come from the word-hash embedder, not MiniLM
        service_module.Service,
        "load",
        classmethod(lambda cls, path, **kw: real_load(cls, path, **{**kw, "embedder": WordHashEmbedder()})),
    )
    return calls


def serve(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(["serve", *argv])
    return int(e.value.code or 0), capsys.readouterr().err


def test_cli_serve_starts_uvicorn_on_127_0_0_1_by_default(serve_dir, fake_uvicorn, capsys):
    code, err = serve([str(serve_dir), "--no-ui", "--port", "8123", "--no-batch"], capsys)
    assert code == 0
    assert (fake_uvicorn["host"], fake_uvicorn["port"]) == ("127.0.0.1", 8123)
    paths = {r.path for r in fake_uvicorn["app"].routes}
    assert "/recommend" in paths and "/ui" not in paths
    assert "150 items, recommend: tiger, search: dense, batching: off" in err
    assert "serving on http://127.0.0.1:8123" in err and "warning" not in err


def test_cli_serve_mounts_the_ui_and_warns_beyond_loopback(serve_dir, fake_uvicorn, capsys):
    code, err = serve([str(serve_dir), "--host", "0.0.0.0"], capsys)
    assert code == 0 and fake_uvicorn["host"] == "0.0.0.0"
    assert "/ui" in {getattr(r, "path", None) for r in fake_uvicorn["app"].routes}
    assert "reachable from other machines and has no authentication" in err


def test_cli_serve_errors_are_one_line(tmp_path, capsys):
    assert serve([str(tmp_path / "missing")], capsys) == (
        1,
        f"Error: {tmp_path / 'missing'}: no such directory\n",
    )
    assert serve([str(tmp_path), "--port", "70000"], capsys) == (
        1,
        "Error: --port 70000 should be between 0 and 65535\n",
    )
    assert serve([str(tmp_path), "--log-level", "bogus"], capsys) == (
        1,
        "Error: --log-level 'bogus' should be one of critical, error, warning, info, debug, trace\n",
    )


def test_cli_serve_on_a_taken_port_is_one_error_before_loading(serve_dir, fake_uvicorn, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = serve([str(serve_dir), "--port", str(port), "--log-level", "INFO"], capsys)
    assert code == 1 and err == f"Error: cannot listen on 127.0.0.1:{port} (Address already in use)\n"
    assert fake_uvicorn == {}  # nothing was loaded or started
    code, err = serve([str(serve_dir), "--port", str(port), "--log-level", "INFO"], capsys)  # freed
    assert code == 0 and fake_uvicorn["log_level"] == "info"


def test_cli_serve_sets_the_search_filter_and_history_weight(serve_dir, tmp_path, fake_uvicorn, capsys):
    save_scratch_llm(serve_dir, tmp_path / "new", facts=True)
    code, err = serve([str(serve_dir), "--llm", str(tmp_path / "new"), "--no-search-filter",
                       "--history-weight", "0.5"], capsys)  # fmt: skip
    config = fake_uvicorn["app"].state.service.config
    assert code == 0 and (config.search_filter, config.history_weight) == (False, 0.5)
    assert fake_uvicorn["app"].state.service.info()["search_filter"] == "off" and "warning" not in err
    assert serve([str(serve_dir), "--history-weight", "200"], capsys) == (
        1,
        "Error: --history-weight 200.0 should be between 0 and 100\n",
    )


def test_cli_serve_warns_when_the_language_model_cannot_filter(serve_dir, tmp_path, fake_uvicorn, capsys):
    save_scratch_llm(serve_dir, tmp_path / "old")  # items.parquet without brand / price
    code, err = serve([str(serve_dir), "--llm", str(tmp_path / "old")], capsys)
    assert code == 0
    assert "warning: the language model's items.parquet keeps no brand or price" in err


def corrupt(path, data: bytes = b"PAR1 this is not a Parquet file"):
    path.write_bytes(data)
    return path


def test_cli_serve_checks_the_ids_file_at_start_and_does_not_serve(serve_dir, tmp_path, fake_uvicorn, capsys):
    # With a TIGER run the ids file is read only by /report: it must still be checked before serving.
    missing = tmp_path / "missing.parquet"
    assert serve([str(serve_dir), "--ids", str(missing)], capsys) == (1, f"Error: {missing}: no such file\n")
    bad = corrupt(tmp_path / "corrupt.parquet")
    code, err = serve([str(serve_dir), "--ids", str(bad)], capsys)
    assert code == 1 and err.startswith(f"Error: {bad}: not a readable Parquet file (")
    assert err.count("\n") == 1 and "Traceback" not in err
    wrong = serve_dir / "embeddings.parquet"  # Parquet, but no Semantic IDs in it
    assert serve([str(serve_dir), "--ids", str(wrong)], capsys) == (
        1,
        f"Error: {wrong}: missing column(s) semantic_id, codes (has item_id, embedding)\n",
    )
    assert fake_uvicorn == {}  # uvicorn never started


def test_a_corrupt_file_of_the_served_directory_or_run_is_one_error_at_start(serve_dir, tmp_path, capsys):
    shutil.copytree(serve_dir, tmp_path / "d")
    corrupt(tmp_path / "d" / "ids.parquet")  # found by default, read only by /report
    with pytest.raises(SemidError, match=r"d/ids.parquet: not a readable Parquet file \(.*magic bytes"):
        Service.load(tmp_path / "d", embedder=WordHashEmbedder())
    shutil.copy(serve_dir / "ids.parquet", tmp_path / "d" / "ids.parquet")
    corrupt(tmp_path / "d" / "tiger" / "sequences.parquet")
    code, err = serve([str(tmp_path / "d")], capsys)
    assert code == 1 and err.startswith(f"Error: {tmp_path / 'd' / 'tiger'}: not a readable run (")
    assert "sequences.parquet" in err and err.count("\n") == 1


def test_a_corrupt_language_model_is_one_error_at_start(serve_dir, tmp_path, capsys):
    llm = tmp_path / "llm"
    llm.mkdir()
    (llm / "semid_llm.json").write_text("{}")
    corrupt(llm / "model.safetensors", b"not safetensors")
    code, err = serve([str(serve_dir), "--llm", str(llm)], capsys)
    assert code == 1 and err.startswith(f"Error: {llm}: not a readable language model (")
    assert err.count("\n") == 1


def test_a_report_that_fails_after_start_is_a_json_500(serve_dir, tmp_path, caplog):
    for name in ("ids.parquet", "embeddings.parquet"):
        shutil.copy(serve_dir / name, tmp_path / name)
    shutil.copytree(serve_dir / "data", tmp_path / "data")
    service = Service.load(tmp_path, embedder=WordHashEmbedder())
    corrupt(tmp_path / "ids.parquet")  # replaced by something broken while the server runs
    with TestClient(create_app(service, ui=False)) as c:
        r = c.get("/report")
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    detail = r.json()["detail"]
    assert detail.startswith(
        f"the report could not be built: {tmp_path / 'ids.parquet'}: not a readable Parquet"
    )
    assert "\n" not in detail and "Traceback" not in caplog.text


def test_demo_has_a_serve_flag(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "--serve" in capsys.readouterr().out


def test_the_ui_is_mounted_and_serves_no_files_from_disk(service, serve_dir):
    with TestClient(create_app(service, ui=True)) as c:
        root = c.get("/", follow_redirects=False)
        assert root.status_code == 307 and root.headers["location"] == "/ui/"
        page = c.get("/ui/")
        assert page.status_code == 200 and "semid" in page.text
        for path in ("/etc/passwd", str(serve_dir / "ids.parquet"), "../../../../etc/passwd"):
            r = c.get(f"/ui/gradio_api/file={path}")
            assert r.status_code in (403, 404), path

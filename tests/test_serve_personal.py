"""`POST /search` with a history: the query language model and TIGER search together (issue #22, step 4)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from conftest import WordHashEmbedder, save_scratch_llm
from semid.serve import create_app
from semid.serve.service import Service


@pytest.fixture(scope="module")
def personal(serve_dir, tmp_path_factory):
    """The served demo layout (a tiny TIGER run) plus a tiny untrained query LM over the same IDs."""
    import torch

    torch.manual_seed(0)
    dense = Service.load(serve_dir, embedder=WordHashEmbedder())
    llm = save_scratch_llm(serve_dir, tmp_path_factory.mktemp("personal") / "llm", spread=2.0)
    service = Service.load(serve_dir, llm=llm)
    with TestClient(create_app(service, ui=False)) as client:
        yield service, dense, client


def history_of(service: Service, n: int = 3) -> list[str]:
    return [str(i) for i in service.catalogue.item_ids[:n]]


def test_a_history_makes_it_a_personalised_search_of_real_distinct_items(personal) -> None:
    service, _, client = personal
    r = client.post("/search", json={"query": "a matte red lipstick", "k": 5, "history": history_of(service)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == "lm+history"
    found = [i["item_id"] for i in body["items"]]
    assert len(set(found)) == 5 and all(f in service.catalogue.index for f in found)
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_history_weight_0_answers_as_the_query_model_alone(personal) -> None:
    service, _, client = personal
    plain = client.post("/search", json={"query": "a matte red lipstick", "k": 5}).json()
    zero = client.post(
        "/search",
        json={"query": "a matte red lipstick", "k": 5, "history": history_of(service), "history_weight": 0},
    ).json()
    assert [i["item_id"] for i in zero["items"]] == [i["item_id"] for i in plain["items"]]
    assert [i["score"] for i in zero["items"]] == pytest.approx(
        [i["score"] for i in plain["items"]], abs=1e-5
    )
    weighted = client.post(
        "/search",
        json={"query": "a matte red lipstick", "k": 5, "history": history_of(service), "history_weight": 3},
    ).json()
    assert [i["item_id"] for i in weighted["items"]] != [i["item_id"] for i in plain["items"]]


def test_a_stored_user_searches_with_their_own_history(personal) -> None:
    service, _, client = personal
    user = str(service.recommender.data.user_ids[0])
    r = client.post("/search", json={"query": "shampoo", "k": 3, "user_id": user})
    assert r.status_code == 200 and r.json()["method"] == "lm+history"


@pytest.mark.parametrize(
    "query", ["口紅が欲しい", "أريد أحمر شفاه", "🙂🙂🙂", "Lippenstift für trockene Lippen, günstig"]
)
def test_requests_in_another_language_still_answer_real_items(personal, query) -> None:
    service, _, client = personal
    for body in ({"query": query, "k": 3}, {"query": query, "k": 3, "history": history_of(service)}):
        r = client.post("/search", json=body)
        assert r.status_code == 200, r.text
        assert all(i["item_id"] in service.catalogue.index for i in r.json()["items"])


# --------------------------------------------------------------------------------------------------------
# Bad input


def test_unknown_history_items_are_named(personal) -> None:
    _, _, client = personal
    r = client.post("/search", json={"query": "lipstick", "k": 3, "history": ["no-such-item"]})
    assert r.status_code == 404 and "no-such-item" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"query": "", "k": 3}, 422, "query"),
        ({"query": "   ", "k": 3, "history": ["x"]}, 422, "the query is empty"),
        ({"query": "x" * 10_000, "k": 3}, 422, "query"),
        ({"query": "x", "k": 3, "history": []}, 422, "the history is empty"),
        ({"query": "x", "k": 3, "history": ["a"], "history_weight": -1}, 422, "history_weight"),
    ],
)
def test_bad_search_requests_are_one_clear_4xx(personal, body, status, detail) -> None:
    _, _, client = personal
    r = client.post("/search", json=body)
    assert r.status_code == status and detail in r.json()["detail"]


def test_a_dense_only_server_says_what_personalised_search_needs(personal) -> None:
    service, dense, _ = personal
    with TestClient(create_app(dense, ui=False)) as client:
        r = client.post("/search", json={"query": "lipstick", "k": 3, "history": history_of(service)})
    assert r.status_code == 422, r.text
    assert (
        r.json()["detail"] == "personalised search needs a query language model and a TIGER run (serve both)"
    )

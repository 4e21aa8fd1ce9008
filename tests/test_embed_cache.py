"""The embedding cache and embed_catalogue: only texts the cache has not seen reach the model."""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest
import torch

from semid.embed.backends import Embedder
from semid.embed.cache import EmbeddingCache, default_cache_dir, text_keys
from semid.embed.pipeline import EmbedStats, embed_catalogue
from semid.errors import SemidError


def _vec(text: str, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).normal(size=dim).astype(np.float32)


class CountingEmbedder(Embedder):
    """A stand-in model: a fixed random vector per text; records every text it embeds and every load."""

    def __init__(self, dim: int = 8, name: str = "fake:v1") -> None:
        super().__init__(
            dim=dim, normalize=True, device="cpu", batch_size=16, max_batch_tokens=None, num_threads=None
        )
        self.name = name
        self.embedded: list[str] = []
        self.loads = 0

    def _load(self) -> int:
        self.loads += 1
        return self._dim or 8

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        return [[0] * len(t.split()) for t in texts]

    def _forward(self, rows: np.ndarray, token_ids: list[list[int]], texts: list[str]) -> torch.Tensor:
        self.embedded.extend(texts[r] for r in rows)
        return torch.from_numpy(np.stack([_vec(texts[r], self._dim or 8) for r in rows]))


def _catalogue(n: int = 200) -> tuple[list[str], list[str]]:
    return [f"B{i:04d}" for i in range(n)], [f"Title: item number {i}; Brand: acme" for i in range(n)]


@pytest.fixture
def cache(tmp_path) -> EmbeddingCache:
    with EmbeddingCache(tmp_path / "cache") as c:
        yield c


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Loading an embedder sets torch's thread count for this machine; leave other tests' setting alone."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_rerun_after_editing_ten_items_embeds_only_those_ten(cache):
    ids, texts = _catalogue(200)
    first = CountingEmbedder()
    X1 = embed_catalogue(ids, texts, first, cache=cache)
    assert len(first.embedded) == 200

    edited = list(texts)
    for i in range(0, 100, 10):
        edited[i] = texts[i] + "; Price: 9.99"
    second = CountingEmbedder()
    stats = EmbedStats()
    X2 = embed_catalogue(ids, edited, second, cache=cache, stats=stats)
    assert sorted(second.embedded) == sorted(edited[i] for i in range(0, 100, 10))
    assert (stats.n_cached, stats.n_embedded) == (190, 10)
    unchanged = [i for i in range(200) if i % 10 or i >= 100]
    np.testing.assert_array_equal(X2[unchanged], X1[unchanged])
    np.testing.assert_allclose(X2, embed_catalogue(ids, edited, CountingEmbedder()), atol=1e-6)


def test_a_full_cache_hit_never_loads_the_model(cache):
    ids, texts = _catalogue(50)
    X1 = embed_catalogue(ids, texts, CountingEmbedder(), cache=cache)
    again = CountingEmbedder()
    X2 = embed_catalogue(ids, texts, again, cache=cache)
    assert again.loads == 0 and again.embedded == []
    np.testing.assert_array_equal(X1, X2)


def test_vectors_come_back_in_item_order_and_normalised():
    ids, texts = _catalogue(40)
    X = embed_catalogue(ids, texts, CountingEmbedder())
    expected = np.stack([_vec(t, 8) for t in texts])
    np.testing.assert_allclose(X, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-6)


def test_identical_texts_are_embedded_once():
    model = CountingEmbedder()
    X = embed_catalogue(["a", "b", "c"], ["same", "other", "same"], model)
    assert sorted(model.embedded) == ["other", "same"]
    np.testing.assert_array_equal(X[0], X[2])


def test_another_model_identity_does_not_reuse_vectors(cache):
    ids, texts = _catalogue(20)
    embed_catalogue(ids, texts, CountingEmbedder(name="fake:v1"), cache=cache)
    other = CountingEmbedder(name="fake:v2")
    embed_catalogue(ids, texts, other, cache=cache)
    assert len(other.embedded) == 20
    assert cache.models() == {"fake:v1": 20, "fake:v2": 20}


def test_the_cache_survives_reopening_and_honours_semid_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMID_CACHE_DIR", str(tmp_path / "env-cache"))
    assert default_cache_dir() == tmp_path / "env-cache"
    ids, texts = _catalogue(10)
    with EmbeddingCache() as c:
        embed_catalogue(ids, texts, CountingEmbedder(), cache=c)
    assert (tmp_path / "env-cache" / "embeddings.sqlite").is_file()
    model = CountingEmbedder()
    embed_catalogue(ids, texts, model, cache=tmp_path / "env-cache")  # a directory works too
    assert model.embedded == []


def test_get_marks_hits_and_leaves_misses_zero(cache):
    keys = text_keys(["a", "b", "c"])
    cache.put("m", keys[:2], np.ones((2, 3), np.float32))
    found, X = cache.get("m", keys)
    assert found.tolist() == [True, True, False]
    assert X.tolist() == [[1, 1, 1], [1, 1, 1], [0, 0, 0]]
    found, X = cache.get("unknown", keys)
    assert not found.any() and X.shape == (3, 0)


def test_a_model_keeps_one_dimension(cache):
    cache.put("m", text_keys(["a"]), np.ones((1, 3), np.float32))
    with pytest.raises(SemidError, match=r"model 'm' has dim 3, not 4$"):
        cache.put("m", text_keys(["b"]), np.ones((1, 4), np.float32))


def test_clear_forgets_one_model_or_all(cache):
    cache.put("m1", text_keys(["a", "b"]), np.ones((2, 2), np.float32))
    cache.put("m2", text_keys(["a"]), np.ones((1, 2), np.float32))
    cache.clear("m1")
    assert cache.count() == 1 and cache.count("m2") == 1
    cache.clear()
    assert cache.count() == 0


def test_two_writers_on_one_cache_do_not_lose_vectors(tmp_path):
    errors: list[Exception] = []

    def write(start: int) -> None:
        try:
            with EmbeddingCache(tmp_path / "shared") as c:
                for i in range(start, start + 200, 20):
                    texts = [f"text {j}" for j in range(i, i + 20)]
                    c.put("m", text_keys(texts), np.full((20, 4), i, np.float32))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(s,)) for s in (0, 200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with EmbeddingCache(tmp_path / "shared") as c:
        assert c.count("m") == 400


def test_a_damaged_cache_is_one_error_naming_the_file_and_the_way_out(tmp_path):
    keys = text_keys([f"text {i}" for i in range(3000)])
    with EmbeddingCache(tmp_path) as c:
        c.put("m", keys, np.random.default_rng(0).random((3000, 64), dtype=np.float32))
    f = tmp_path / "embeddings.sqlite"
    data = bytearray(f.read_bytes())
    data[8192:20480] = bytes(range(256)) * 48  # pages of the vectors table overwritten
    f.write_bytes(bytes(data))
    with EmbeddingCache(tmp_path) as c, pytest.raises(SemidError) as e:
        c.get("m", keys)
    assert str(e.value) == (
        f"{f}: damaged embedding cache (database disk image is malformed); delete it, or embed with "
        "--no-cache or another --cache-dir"
    )


def test_the_cache_stores_no_nan_and_checks_its_timeout(tmp_path):
    with EmbeddingCache(tmp_path) as c:
        with pytest.raises(
            SemidError, match=r"^cache put: the vectors hold NaN or infinite values; nothing was stored$"
        ):
            c.put("m", text_keys(["a"]), np.array([[np.nan, 1.0]], dtype=np.float32))
        assert c.count() == 0
    with pytest.raises(SemidError, match=r"^timeout='x' should be a number of seconds >= 0$"):
        EmbeddingCache(tmp_path / "new", timeout="x")
    assert not (tmp_path / "new").exists()


def test_an_item_without_text_is_named():
    with pytest.raises(SemidError) as e:
        embed_catalogue(["a", "b", "c"], ["x", "  ", ""], CountingEmbedder())
    assert str(e.value) == "item 'b' has no text to embed (2 item(s) like it; check the template's fields)"


def test_ids_and_texts_must_pair_up():
    with pytest.raises(SemidError, match=r"^2 item ids for 3 texts$"):
        embed_catalogue(["a", "b"], ["x", "y", "z"], CountingEmbedder())


def test_an_empty_catalogue_gives_an_empty_matrix():
    assert embed_catalogue([], [], CountingEmbedder(dim=5)).shape == (0, 5)

"""`semid embed` end to end on a tiny local model: catalogue in, embeddings file out, cache reused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from semid.cli import main
from semid.embed.store import read_embeddings, read_metadata
from test_embed_backends import build_tiny_decoder

pytest.importorskip("transformers")

ITEMS = [
    {
        "item_id": "a",
        "title": "red lipstick",
        "brand": "acme",
        "categories": ["Beauty", "Makeup"],
        "price": 9.5,
    },
    {"item_id": "b", "title": "shampoo", "brand": None, "categories": ["Beauty", "Hair"], "price": None},
    {"item_id": "c", "title": "blue nail polish", "brand": "None", "categories": [], "price": 4.0},
]


def run(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_decoder(tmp_path_factory.mktemp("tiny-qwen"))


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Loading an embedder sets torch's thread count for this machine; leave other tests' setting alone."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def catalogue(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMID_CACHE_DIR", str(tmp_path / "cache"))  # never the user's cache
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ITEMS))
    return path


def test_embed_writes_one_unit_vector_per_item_and_reuses_the_cache(tmp_path, capsys, tiny, catalogue):
    out = tmp_path / "emb.parquet"
    code, _, err = run(capsys, "embed", str(catalogue), "-o", str(out), "--model", str(tiny), "--dim", "16")
    assert code in (0, None), err
    ids, X = read_embeddings(out)
    assert ids.tolist() == ["a", "b", "c"] and X.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-6)
    meta = read_metadata(out)
    assert meta["model"].startswith("hf:") and "dim=16" in meta["model"]
    assert "(3 distinct texts, 0 from the cache)" in err

    code, _, err = run(capsys, "embed", str(catalogue), "-o", str(tmp_path / "again.parquet"), "--model",
                       str(tiny), "--dim", "16")  # fmt: skip
    assert code in (0, None), err
    assert "(3 distinct texts, 3 from the cache)" in err
    np.testing.assert_array_equal(read_embeddings(tmp_path / "again.parquet")[1], X)


def test_the_template_decides_the_text(tmp_path, capsys, tiny, catalogue):
    args = ["embed", str(catalogue), "--model", str(tiny), "--no-cache"]
    run(capsys, *args, "-o", str(tmp_path / "default.parquet"))
    code, _, err = run(capsys, *args, "-o", str(tmp_path / "title.parquet"), "--template", "{title}")
    assert code in (0, None), err
    assert "e.g. 'red lipstick'" in err
    assert not (tmp_path / "cache").exists()  # --no-cache touches no cache
    default, title = (
        read_embeddings(tmp_path / "default.parquet")[1],
        read_embeddings(tmp_path / "title.parquet")[1],
    )
    assert not np.allclose(default, title)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["-o", "emb.csv"], "emb.csv: write embeddings.parquet (in memory) or a directory (streamed)"),
        (["-o", "e.parquet", "--template", "{colour}"],
         "template field {colour} is not in the catalogue (fields: title, brand, categories, price)"),
        (["-o", "e.parquet", "--pooling", "mean"],
         "--pooling applies to --backend hf (sentence-transformers models pool themselves)"),
    ],
    ids=["not-parquet", "unknown-field", "pooling-on-st"],
)  # fmt: skip
def test_mistakes_print_one_error_line(tmp_path, capsys, catalogue, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "embed", str(catalogue), *extra)
    assert code == 1
    assert err.strip().splitlines()[-1] == f"Error: {message}"
    assert "Traceback" not in err
    assert not (tmp_path / "e.parquet").exists()


def test_the_default_text_reads_the_fields_the_catalogue_has_and_says_which(
    tmp_path, capsys, tiny, monkeypatch
):
    monkeypatch.setenv("SEMID_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "shop.jsonl"
    path.write_text('{"item_id": "a", "title": "Hair Dryer", "brand": "Acme"}\n'
                    '{"item_id": "b", "title": "Lip Balm", "brand": null}\n')  # fmt: skip
    out = tmp_path / "emb.parquet"
    code, _, err = run(capsys, "embed", str(path), "-o", str(out), "--model", str(tiny))
    assert code in (0, None), err
    assert "item text from fields: title, brand\n" in err
    assert "e.g. 'Title: Hair Dryer; Brand: Acme'" in err
    assert read_metadata(out)["template"] == "Title: {title}; Brand: {brand}"
    assert read_embeddings(out)[0].tolist() == ["a", "b"]


def test_encoding_reads_a_latin1_catalogue(tmp_path, capsys, tiny, monkeypatch):
    monkeypatch.setenv("SEMID_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "items.csv"
    path.write_bytes("item_id,title\na,Crème brûlée candle\n".encode("latin-1"))
    args = ["embed", str(path), "-o", str(tmp_path / "emb.parquet"), "--model", str(tiny)]
    code, _, err = run(capsys, *args)
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        "Error: items.csv line 2: byte 0xe8 is not valid utf-8 text; if the file is Latin-1, pass --encoding "
        "latin-1 on the command line, or encoding='latin-1' in Python"
    )
    code, _, err = run(capsys, *args, "--encoding", "latin-1")
    assert code in (0, None), err
    assert "e.g. 'Title: Crème brûlée candle'" in err


def test_a_streamed_embed_builds_the_same_default_text_from_the_catalogues_fields(
    tmp_path, capsys, tiny, monkeypatch
):
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setenv("SEMID_CACHE_DIR", str(tmp_path / "cache"))
    shop = pa.table({"item_id": ["a", "b"], "title": ["Hair Dryer", "Lip Balm"], "brand": ["Acme", None]})
    pq.write_table(shop, tmp_path / "shop.parquet")
    code, _, err = run(capsys, "embed", str(tmp_path / "shop.parquet"), "-o", str(tmp_path / "emb"),
                       "--model", str(tiny))  # fmt: skip
    assert code in (0, None), err
    assert "item text: Title: {title}; Brand: {brand}\n" in err
    streamed_ids, streamed = read_embeddings(tmp_path / "emb")
    code, _, err = run(capsys, "embed", str(tmp_path / "shop.parquet"), "-o", str(tmp_path / "emb.parquet"),
                       "--model", str(tiny))  # fmt: skip
    ids, in_memory = read_embeddings(tmp_path / "emb.parquet")
    assert streamed_ids.tolist() == ids.tolist() == ["a", "b"]
    np.testing.assert_allclose(streamed, in_memory, atol=1e-6)  # the same texts both ways

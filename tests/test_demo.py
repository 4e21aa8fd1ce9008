"""`semid demo`: the offline main job, end to end on a small demo shop."""

import pytest

from semid.cli import main
from semid.ids.table import read_ids


@pytest.mark.slow
def test_demo_runs_offline_and_reruns_from_cache(tmp_path, capsys):
    argv = [
        "demo",
        "--out",
        str(tmp_path / "d"),
        "--items",
        "300",
        "--users",
        "200",
        "--codebook-size",
        "8",
        "--no-tiger",
    ]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code in (0, None)
    out = capsys.readouterr().out
    assert "Semantic ID quality" in out and "unique IDs before dedup" in out and "prefix " in out
    ids = read_ids(tmp_path / "d" / "ids.parquet")
    assert len(ids) == 300 and len(set(ids.semantic_ids)) == 300
    for name in ("embeddings.parquet", "model/model.safetensors", "ids.db", "data", "semid-demo.json"):
        assert (
            tmp_path / "d" / name
        ).exists()  # semid-demo.json: the folder is a demo's, a re-run may replace it

    # second run: embeddings come from the cache, the registry keeps every ID
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr().out
    assert "0 new, 300 kept their stored IDs" in out
    assert read_ids(tmp_path / "d" / "ids.parquet").semantic_ids == ids.semantic_ids

"""`semid report`: a self-contained HTML page with pictures, rendered in a real browser when available."""

import shutil
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import clustered
from semid.cli import main
from semid.errors import SemidError
from semid.ids.report import build_report
from semid.ids.table import IdTable, read_ids, write_ids


@pytest.fixture
def fitted(tmp_path):
    X = clustered(n=400, dim=16)
    emb = tmp_path / "emb.parquet"
    pq.write_table(
        pa.table(
            {
                "item_id": [f"i{i}" for i in range(400)],
                "embedding": pa.array(list(X), type=pa.list_(pa.float32())),
            }
        ),
        emb,
    )
    for argv in (
        ["fit", str(emb), "-o", str(tmp_path / "m"), "--levels", "2", "--codebook-size", "8"],
        ["assign", str(tmp_path / "m"), str(emb), "-o", str(tmp_path / "ids.parquet")],
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code in (0, None)
    (tmp_path / "m" / "metrics.jsonl").write_text('{"epoch": 0, "loss": 2.0}\n{"epoch": 1, "loss": 1.0}\n')
    return tmp_path, emb


def test_report_from_ids_with_embeddings_has_every_section(fitted):
    tmp, emb = fitted
    out = build_report(tmp / "ids.parquet", tmp / "r.html", emb=emb, titles={"i0": "Velvet Lipstick"})
    page = out.read_text()
    for section in (
        "Summary",
        "Codebook usage per level",
        "Collision buckets",
        "Training curves",
        "Item map",
        "Sample items per ID prefix",
    ):
        assert f"<h2>{section}</h2>" in page
    assert page.count("data:image/png;base64,") == 4  # usage, collisions, curves, map
    assert "unique IDs before dedup" in page and 'src="http' not in page  # self-contained


def test_a_report_of_an_empty_ids_file_is_one_error_and_writes_nothing(fitted, capsys):
    tmp, _ = fitted
    ids = read_ids(tmp / "ids.parquet")
    empty = IdTable(ids.item_ids[:0], [], ids.codes[:0], ids.base_codes[:0], ids.meta)
    write_ids(tmp / "empty.parquet", empty)
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp / "empty.parquet"), "-o", str(tmp / "r.html")])
    assert e.value.code == 1
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == f"Error: {tmp / 'empty.parquet'}: no items, nothing to report"
    )
    assert not (tmp / "r.html").exists()


def test_report_from_model_dir_needs_embeddings(fitted):
    tmp, emb = fitted
    with pytest.raises(SemidError, match="pass --emb"):
        build_report(tmp / "m", tmp / "r.html")
    page = build_report(tmp / "m", tmp / "r.html", emb=emb).read_text()
    assert "relative reconstruction error" in page


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium not installed")
def test_report_renders_in_headless_chromium(fitted, tmp_path):
    tmp, emb = fitted
    out = build_report(tmp / "ids.parquet", tmp / "r.html", emb=emb)
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,1800",
            out.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    # a rendered page with figures is far from blank: many distinct non-white pixels
    non_white = (img[..., :3] < 0.95).any(-1).mean()
    assert non_white > 0.05, non_white

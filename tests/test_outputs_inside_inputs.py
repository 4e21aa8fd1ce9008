"""No command replaces what it reads: an output pointed inside an input directory, at a directory an input
names only indirectly (an IDs file's model), at a local model, or at a folder of someone else's files is
one `Error:` line, and every input is byte for byte what it was."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import clustered, write_walk_shop
from semid.cli import main
from semid.cli.demo import DEMO_MARKER, is_demo_dir
from semid.embed.store import write_embeddings
from semid.ids import format_ids
from semid.ids.table import IdTable, read_ids_meta, write_ids
from semid.quantize import RQKMeans

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(argv: list) -> int:
    """The CLI's exit code."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    return int(exc.value.code or 0)


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, err
    return lines[0]


def digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (or of ``root`` itself), by relative path."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture
def quantized(tmp_path: Path) -> Path:
    """emb.parquet (40 items), model/ (an RQ-KMeans with a metrics.jsonl beside it) and ids.parquet whose
    metadata names model/ (as `semid assign` writes it)."""
    X = clustered(n=40, dim=8, centres=4)
    ids = [f"i{i}" for i in range(40)]
    write_embeddings(tmp_path / "emb.parquet", ids, X)
    q = RQKMeans(n_levels=2, codebook_size=4, random_state=0).fit(X)
    q.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "metrics.jsonl").write_text('{"level": 0, "error": 0.5}\n')
    codes = q.encode(X)
    meta = {"format": "dash", "codebook_sizes": [4, 4], "model_dir": str(tmp_path / "model")}
    write_ids(tmp_path / "ids.parquet", IdTable(ids, format_ids(codes, "dash"), codes, codes, meta))
    return tmp_path


def test_a_report_of_ids_never_replaces_a_file_of_the_model_it_reads(quantized: Path, capsys) -> None:
    assert read_ids_meta(quantized / "ids.parquet")["model_dir"] == str(quantized / "model")
    before = digest(quantized / "model")
    for name in ("metrics.jsonl", "config.json", "model.safetensors"):  # curves, and the model itself
        code = run(["report", quantized / "ids.parquet", "-o", quantized / "model" / name])
        assert code == 1
        assert error_line(capsys) == (
            f"Error: {quantized / 'model' / name}: the output would replace {name} inside the input directory "
            f"{quantized / 'model'}; write to another path"
        )
    assert digest(quantized / "model") == before


def test_embed_never_writes_over_a_file_of_the_local_model_it_loads(tmp_path: Path, capsys) -> None:
    write_walk_shop(tmp_path, 10, n_users=5, lengths=(2, 3))
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # as every transformers model directory holds
    (model / "items.parquet").write_bytes(b"the model's own file")
    code = run(["embed", tmp_path / "items.csv", "-o", model / "items.parquet", "--model", model])
    assert code == 1
    assert "the output would replace items.parquet inside the input directory" in error_line(capsys)
    assert (model / "items.parquet").read_bytes() == b"the model's own file"


def test_demo_refuses_a_folder_of_other_files_and_replaces_only_a_demo_folder(tmp_path: Path, capsys) -> None:
    mine = tmp_path / "proj"
    (mine / "tiger").mkdir(parents=True)
    (mine / "embeddings.parquet").write_bytes(b"my embeddings")
    (mine / "tiger" / "config.json").write_text('{"model_type": "sasrec"}')
    before = digest(mine)
    code = run(["demo", "--out", mine, "--items", "60", "--users", "40", "--no-tiger"])
    assert code == 1
    assert error_line(capsys).startswith(
        f"Error: {mine} holds files that are not a demo folder written by semid"
    )
    assert digest(mine) == before
    # a folder an earlier demo wrote: its marker, or (before the marker) exactly the demo's layout
    demo = tmp_path / "old-demo"
    for name in ("data", "model", "cache"):
        (demo / name).mkdir(parents=True)
    for name in ("ids.parquet", "ids.db", "embeddings.parquet"):
        (demo / name).write_bytes(b"")
    assert is_demo_dir(demo)
    (demo / "notes.txt").write_text("mine")
    assert not is_demo_dir(demo)
    (demo / DEMO_MARKER).write_text(json.dumps({"written_by": "semid demo"}))
    assert is_demo_dir(demo)


def test_train_never_takes_a_quantizer_folder_for_a_killed_run(quantized: Path, capsys) -> None:
    (quantized / "data").mkdir()
    write_walk_shop(quantized / "data", 20, n_users=30, lengths=(4, 6))
    before = digest(quantized / "model")  # config.json, model.safetensors, metrics.jsonl: run-like names
    code = run(["train", "sasrec", quantized / "data", "-o", quantized / "model", "--epochs", "1", "-q"])
    assert code == 1
    assert error_line(capsys).startswith(
        f"Error: {quantized / 'model'} holds files that are not a run directory written by semid"
    )
    assert digest(quantized / "model") == before


def test_an_rq_vae_run_folder_is_never_an_input_nor_a_folder_of_other_files(tmp_path: Path, capsys) -> None:
    X = clustered(n=60, dim=8, centres=4)
    parts = tmp_path / "vae.run"  # embeddings as a folder of parts, named as vae's run folder would be
    parts.mkdir()
    write_embeddings(parts / "part-0.parquet", [f"i{i}" for i in range(60)], X)
    before = digest(parts)
    code = run(["fit", parts, "--method", "rq-vae", "-o", tmp_path / "vae", "--codebook-size", "4"])
    assert code == 1
    assert "the output is also an input of this command" in error_line(capsys)
    assert digest(parts) == before and not (tmp_path / "vae").exists()
    write_embeddings(tmp_path / "emb.parquet", [f"i{i}" for i in range(60)], X)
    (tmp_path / "m.run").mkdir()
    (tmp_path / "m.run" / "notes.txt").write_text("mine")
    code = run(["fit", tmp_path / "emb.parquet", "--method", "rq-vae", "-o", tmp_path / "m"])
    assert code == 1
    assert error_line(capsys).startswith(
        f"Error: {tmp_path / 'm.run'} holds files that are not an RQ-VAE run directory written by semid"
    )
    assert (tmp_path / "m.run" / "notes.txt").read_text() == "mine" and not (tmp_path / "m").exists()


def test_a_fresh_rq_vae_fit_never_writes_over_a_killed_runs_checkpoints(tmp_path: Path, capsys) -> None:
    write_embeddings(
        tmp_path / "emb.parquet", [f"i{i}" for i in range(60)], clustered(n=60, dim=8, centres=4)
    )
    last = tmp_path / "m.run" / "checkpoints" / "last"
    last.mkdir(parents=True)
    (last / "trainer.json").write_text('{"config": {}, "state": {"epoch": 140}}')  # killed: no model saved
    before = digest(tmp_path / "m.run")
    code = run(["fit", tmp_path / "emb.parquet", "--method", "rq-vae", "-o", tmp_path / "m"])
    assert code == 1
    assert error_line(capsys) == (
        f"Error: {tmp_path / 'm.run'} holds an unfinished RQ-VAE run; resume it (--resume {tmp_path / 'm.run'}) "
        "or remove it to start over"
    )
    assert digest(tmp_path / "m.run") == before and not (tmp_path / "m").exists()


def test_replacing_a_directory_never_deletes_a_users_folder_that_merely_looks_like_a_swap_leftover(
    tmp_path: Path,
) -> None:
    from semid._outputs import atomic_path

    out = tmp_path / "E2"
    out.mkdir()
    (out / "part-00000.parquet").write_bytes(b"old")
    backup = tmp_path / ".E2.backup.old"  # the user's, not a `.E2.HOST.PID.XXXX.old` of a killed swap
    backup.mkdir()
    (backup / "keep.txt").write_text("mine")
    with atomic_path(out, is_dir=True, replaceable=lambda _: True) as tmp:
        (tmp / "part-00000.parquet").write_bytes(b"new")
    assert (out / "part-00000.parquet").read_bytes() == b"new"
    assert (backup / "keep.txt").read_text() == "mine"


def test_a_streamed_output_replaces_only_parts_of_its_own_kind_with_nothing_else_beside_them(
    tmp_path: Path,
) -> None:
    from semid.scale.assign import MANIFEST, streamed_output

    def parts_dir(name: str, manifest: dict, *extra: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "part-00000.parquet").write_bytes(b"")
        (d / MANIFEST).write_text(json.dumps(manifest))
        for e in extra:
            (d / e).write_text("mine")
        return d

    embeddings = parts_dir("emb", {"kind": "embed", "model": None})
    ids = parts_dir("ids", {"kind": "assign", "job": {}})
    legacy_ids = parts_dir("old-ids", {"n_items": 1, "job": {}})  # before "kind": an assign's has its job
    noted = parts_dir("noted", {"kind": "assign", "job": {}}, "notes.txt")
    assert streamed_output("assign")(ids) and streamed_output("assign")(legacy_ids)
    assert not streamed_output("assign")(embeddings)  # IDs never replace embeddings
    assert streamed_output("embed")(embeddings) and not streamed_output("embed")(ids)
    assert not streamed_output("assign")(noted)  # a user's file beside the parts keeps the folder


def test_embed_refuses_an_output_that_is_the_cache_the_environment_names(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    write_walk_shop(tmp_path, 10, n_users=5, lengths=(2, 3))
    monkeypatch.setenv("SEMID_CACHE_DIR", str(tmp_path / "E2"))
    (tmp_path / "E2").mkdir()
    (tmp_path / "E2" / "embeddings.sqlite").write_bytes(b"cached vectors")
    code = run(["embed", tmp_path / "items.csv", "-o", tmp_path / "E2"])
    assert code == 1
    assert "the output is also an input of this command" in error_line(capsys)
    assert (tmp_path / "E2" / "embeddings.sqlite").read_bytes() == b"cached vectors"


def test_demo_never_deletes_through_a_link_in_its_folder(tmp_path: Path, capsys) -> None:
    foreign = tmp_path / "elsewhere"
    (foreign / "checkpoints").mkdir(parents=True)
    (foreign / "checkpoints" / "mine.txt").write_text("mine")
    demo = tmp_path / "d"
    demo.mkdir()
    (demo / DEMO_MARKER).write_text("{}")
    (demo / "tiger").symlink_to(foreign)
    code = run(["demo", "--out", demo, "--items", "60", "--users", "40"])
    assert code == 1
    assert error_line(capsys).startswith(
        f"Error: {demo / 'tiger'} is a symbolic link; the demo writes its own"
    )
    assert (foreign / "checkpoints" / "mine.txt").read_text() == "mine"


def test_refitting_a_model_folder_never_deletes_a_registry_put_beside_the_model(
    quantized: Path, capsys
) -> None:
    (quantized / "model" / "ids.db").write_bytes(b"the user's registry")
    code = run(["fit", quantized / "emb.parquet", "-o", quantized / "model", "--codebook-size", "4"])
    assert code == 1
    assert error_line(capsys).startswith(
        f"Error: {quantized / 'model'} holds files that are not a quantizer directory written by semid"
    )
    assert (quantized / "model" / "ids.db").read_bytes() == b"the user's registry"


def test_the_embedding_cache_never_writes_into_another_applications_database(tmp_path: Path) -> None:
    import sqlite3

    from semid.embed.cache import EmbeddingCache
    from semid.errors import SemidError

    other = tmp_path / "cache" / "embeddings.sqlite"
    other.parent.mkdir()
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE models (id INTEGER PRIMARY KEY, owner TEXT)")  # a name we use, other columns
    conn.commit()
    conn.close()
    before = other.read_bytes()
    with pytest.raises(SemidError) as e:
        EmbeddingCache(other.parent)
    assert str(e.value) == (
        f"{other} is an SQLite database of another application (tables: models); "
        "give the embedding cache another --cache-dir"
    )
    assert other.read_bytes() == before  # not even switched to WAL mode
    EmbeddingCache(tmp_path / "fresh").close()  # a new cache is still made
    EmbeddingCache(tmp_path / "fresh").close()  # and reopened

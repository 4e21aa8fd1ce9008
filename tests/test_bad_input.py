"""Issue #20: every CLI command against bad input, as one table.

Each row runs one `semid ...` command line in-process on its own fresh copy of a small scratch folder (an
embeddings file, a fitted RQ-KMeans model, its ids.parquet, a tiny catalogue + interactions dataset, a
tiny TIGER run, a prepared LLM data directory and a zoo of broken and foreign files) and requires:

- a non-zero exit;
- exactly one ``Error: `` line on stderr (the last line), and no traceback;
- that the message names the offending path or value (``expect`` is a substring of it; ``{s}`` stands for
  the scratch folder);
- that no file or directory in the scratch folder changed, appeared or disappeared (the command's cwd is
  the scratch folder, so a stray default output is caught too; the embedding cache lives outside it);
- no ``.*.tmp`` temporaries left behind.

The families: missing, empty, corrupt or foreign inputs; an output that is an input; an output that cannot
be written (under a file, a directory where a file goes or the other way round, a directory of someone
else's files, a read-only directory); negative or absurd numbers; devices this machine does not have;
bytes that are not UTF-8.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from conftest import TINY_TIGER, clustered, write_walk_shop
from semid.cli import main

N_ITEMS = 40
RANDOM_BYTES = bytes(np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8))

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny models, one thread


def _run(argv: list[str]) -> None:
    """A fixture step: one command that must succeed."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code in (0, None), argv


def _build(root: Path) -> None:
    """The scratch inputs, good and bad, shared (by copy) by every case."""
    ids = [f"i{i}" for i in range(N_ITEMS)]
    X = clustered(n=N_ITEMS, dim=16, centres=8)

    # embeddings, good and bad
    pq.write_table(
        pa.table({"item_id": ids, "embedding": pa.array(list(X), type=pa.list_(pa.float32()))}),
        root / "e.parquet",
    )
    np.save(root / "e.npy", X)
    (root / "ids.txt").write_text("\n".join(ids) + "\n")
    (root / "empty.npy").write_bytes(b"")
    (root / "random.parquet").write_bytes(RANDOM_BYTES)
    (root / "random.npy").write_bytes(RANDOM_BYTES)
    pq.write_table(pa.table({"user": ["a", "b"], "score": [1.0, 2.0]}), root / "other.parquet")
    bad_ids = pa.array([f"i{i}".encode() for i in range(N_ITEMS - 1)] + [b"\xff\xfe"], type=pa.binary())
    pq.write_table(
        pa.table({"item_id": bad_ids, "embedding": pa.array(list(X), type=pa.list_(pa.float32()))}),
        root / "binary_ids.parquet",
    )
    (root / "bad_ids.txt").write_bytes(b"\n".join(i.encode() for i in ids[:-1]) + b"\n\xffbad\n")

    # the model and its IDs
    _run(["fit", str(root / "e.parquet"), "-o", str(root / "model"), "--levels", "2", "--codebook-size", "8"])
    _run(["assign", str(root / "model"), str(root / "e.parquet"), "-o", str(root / "ids.parquet")])
    shutil.copytree(root / "model", root / "model_bad_weights")
    (root / "model_bad_weights" / "model.safetensors").write_bytes(RANDOM_BYTES)
    shutil.copytree(root / "model", root / "model_bad_config")
    (root / "model_bad_config" / "config.json").write_text("{ not json")

    # a catalogue + interactions dataset (users walk the catalogue in order)
    data = root / "data"
    data.mkdir()
    write_walk_shop(data, N_ITEMS, n_users=60, lengths=(5, 8))
    (root / "cat.jsonl").write_text(
        "".join(json.dumps({"item_id": i, "title": f"Item {i}"}) + "\n" for i in ids)
    )
    (root / "bad_cat.jsonl").write_bytes(
        b'{"item_id": "i0", "title": "fine"}\n{"item_id": "i1", "title": "caf\xff"}\n'
    )
    (root / "empty.jsonl").write_bytes(b"")
    (root / "p5_empty").mkdir()
    (root / "p5_empty" / "sequential_data.txt").write_bytes(b"\n\n")  # blank lines only
    (root / "dup_header.csv").write_text("user_id,item_id,item_id\nu1,i1,i2\n")
    pq.write_table(pa.table({"item_id": [[1, 2], [3]], "title": ["a", "b"]}), root / "list_ids.parquet")
    dated = "".join(f"u{i % 7},i{i % 11},2020-01-{i % 28 + 1:02d}\n" for i in range(300))
    (root / "dated.csv").write_text("user_id,item_id,timestamp\n" + dated + "u1,i1,yesterday\n")
    rows = [{"item_id": i, "title": f"Item {i}", "path": f"aisle {i}"} for i in ids[:8]]
    (root / "path_cat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), root / "path_cat.parquet")
    (root / "other_parts").mkdir()  # a folder of Parquet files that are no Semantic IDs, each its own schema
    pq.write_table(pa.table({"item_id": ["i0"], "title": ["t"]}), root / "other_parts" / "a.parquet")
    pq.write_table(pa.table({"user_id": ["u0"], "n": [1]}), root / "other_parts" / "b.parquet")
    pq.write_table(pa.table({"item_id": bad_ids, "title": [f"t{i}" for i in range(N_ITEMS)]}),
                   root / "binary_cat.parquet")  # fmt: skip
    shutil.copytree(data, root / "bad_data")
    (root / "bad_data" / "interactions.csv").write_bytes(
        b"user_id,item_id,timestamp\nu0,i0,0\nu0,i1,1\nu\xff,i2,2\n"
    )

    # a tiny TIGER run, and copies of it with a broken file
    tiny = {"model": TINY_TIGER["model"], "train": {**TINY_TIGER["train"], "epochs": 1, "batch_size": 64}}
    (root / "tiger.json").write_text(json.dumps(tiny))
    _run(
        ["train", "tiger", str(data), "--ids", str(root / "ids.parquet"), "-o", str(root / "run")]
        + ["--config", str(root / "tiger.json"), "--quiet"]
    )
    shutil.copytree(root / "run", root / "run_bad_weights")
    (root / "run_bad_weights" / "model.safetensors").write_bytes(RANDOM_BYTES)
    shutil.copytree(root / "run", root / "run_bad_config")
    (root / "run_bad_config" / "config.json").write_text("{ not json")
    shutil.copytree(root / "run", root / "run_bad_items")
    (root / "run_bad_items" / "items.parquet").write_bytes(RANDOM_BYTES)

    # a prepared language-model data directory
    _run(["llm", "prepare", str(data), "--ids", str(root / "ids.parquet"), "-o", str(root / "prepared")])

    # foreign things: a directory of someone else's files, a file, another application's SQLite database
    (root / "d").mkdir()
    (root / "d" / "notes.txt").write_text("my notes\n")
    (root / "afile").write_text("not a directory\n")
    (root / "dir.parquet").mkdir()
    (root / "adir").mkdir()
    with sqlite3.connect(root / "other.db") as db:
        db.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")
        db.execute("INSERT INTO contacts VALUES ('ann', '555')")
    db.close()
    (root / "ro").mkdir()  # made read-only per case
    (root / "latin1.json").write_bytes(b'{"model": {}, "train": {"epochs": 1}, "note": "caf\xe9"}\n')
    (root / "llm_corrupt").mkdir()  # a language-model directory with a broken semid_llm.json
    (root / "llm_corrupt" / "semid_llm.json").write_text("{ not json")
    (root / "llm_corrupt" / "model.safetensors").write_bytes(RANDOM_BYTES)
    (root / "llm_bad_weights").mkdir()  # a readable semid_llm.json, weights cut short
    (root / "llm_bad_weights" / "semid_llm.json").write_text('{"codebook_sizes": [4], "system_prompt": ""}')
    (root / "llm_bad_weights" / "config.json").write_text('{"model_type": "llama"}')
    (root / "llm_bad_weights" / "model.safetensors").write_bytes(RANDOM_BYTES)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad_input_base")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEMID_CACHE_DIR", str(tmp_path_factory.mktemp("embed_cache")))
        _build(root)
    return root


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file, and every directory, under ``root`` (relative paths)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def error_line(err: str) -> str:
    """The CLI's failure output: exactly one `Error: ...` line (after any progress lines), no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and err.rstrip("\n").endswith(lines[0]), err
    return lines[0]


# -- the table --------------------------------------------------------------------------------------------
#
# case(id, command line, expected substring of the Error line, ...): {s} is the scratch folder, whose
# inputs _build() writes: e.parquet/e.npy (40 x 16), model/ (RQ-KMeans 2 x 8), ids.parquet, data/
# (items.csv + interactions.csv), cat.jsonl, run/ (TIGER), prepared/ (llm prepare); broken ones: missing.*
# (absent), empty.npy/empty.jsonl (0 bytes), random.parquet/random.npy (random bytes), other.parquet
# (other columns), other.db (another application's SQLite), model_bad_*/run_bad_* (one file corrupted),
# llm_corrupt/, bad_ids.txt / bad_cat.jsonl / bad_data/ / latin1.json (a non-UTF-8 byte), binary_ids.parquet
# / binary_cat.parquet (binary item ids, one not UTF-8); and d/ (d/notes.txt: someone else's directory),
# afile (a regular file), dir.parquet/ and adir/ (empty directories), ro/ (a folder the user cannot write in).

CORRUPT_PARQUET = "not a readable Parquet file"
NOT_A_FILE_DIR = "{s}/afile is a file, not a directory"
FOREIGN_FILES = "{s}/d holds files that are not"
NO_WRITE = "cannot write in {s}/ro (permission denied)"
SAME = "the output is also an input of this command"
NO_CUDA = "device='cuda': this machine has no CUDA GPU"


def case(id: str, argv: str, expect: str, *, readonly: bool = False, cuda: bool = False, bug: str = ""):
    marks = []
    if cuda:
        marks.append(pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"))
    if bug:
        marks.append(pytest.mark.xfail(strict=True, reason=bug))
    return pytest.param(argv, expect, readonly, id=id, marks=marks)


NOT_ONE_LINE = "a traceback instead of one Error line"

CASES = [
    # ---- semid fit EMB -o MODEL_DIR
    case("fit-missing-emb", "fit {s}/missing.parquet -o {s}/m", "{s}/missing.parquet: no such file"),
    case("fit-empty-npy", "fit {s}/empty.npy -o {s}/m", "empty.npy: empty file"),
    case("fit-random-bytes-parquet", "fit {s}/random.parquet -o {s}/m", "random.parquet: " + CORRUPT_PARQUET),
    case("fit-parquet-other-columns", "fit {s}/other.parquet -o {s}/m", "other.parquet: no column 'item_id'"),
    case("fit-foreign-dir-as-emb", "fit {s}/d -o {s}/m", "{s}/d: no .parquet files"),
    case("fit-output-is-input", "fit {s}/e.parquet -o {s}/e.parquet", "{s}/e.parquet: " + SAME),
    case("fit-output-holds-input", "fit {s}/e.parquet -o {s}", "holds the input {s}/e.parquet"),
    case("fit-output-under-file", "fit {s}/e.parquet -o {s}/afile/m", NOT_A_FILE_DIR),
    case(
        "fit-output-is-a-file",
        "fit {s}/e.parquet -o {s}/afile",
        "{s}/afile is a file; the output is a quantizer",
    ),
    case("fit-output-dir-with-foreign-files", "fit {s}/e.parquet -o {s}/d", FOREIGN_FILES),
    case("fit-output-read-only", "fit {s}/e.parquet -o {s}/ro/m", NO_WRITE, readonly=True),
    case("fit-seed-negative", "fit {s}/e.parquet -o {s}/m --seed -1", "--seed -1"),
    case("fit-sample-size-negative", "fit {s}/e.parquet -o {s}/m --sample-size -10", "--sample-size -10"),
    case("fit-levels-0", "fit {s}/e.parquet -o {s}/m --levels 0", "n_levels=0"),
    case("fit-codebook-size-0", "fit {s}/e.parquet -o {s}/m --codebook-size 0", "codebook_size=0"),
    case("fit-codebook-size-not-a-number", "fit {s}/e.parquet -o {s}/m --codebook-size abc", "'abc'"),
    case(
        "fit-codebook-larger-than-data",
        "fit {s}/e.parquet -o {s}/m --codebook-size 100000",
        "40 rows, fewer than codebook_size=100000",
    ),
    case("fit-rq-vae-levels-0", "fit {s}/e.parquet -o {s}/m --method rq-vae --levels 0", "n_levels=0"),
    case("fit-device-cuda", "fit {s}/e.parquet -o {s}/m --device cuda", NO_CUDA, cuda=True),
    case(
        "fit-ids-txt-not-utf8",
        "fit {s}/e.npy --ids {s}/bad_ids.txt -o {s}/m",
        "bad_ids.txt line 40: byte 0xff is not UTF-8",
    ),
    case(
        "fit-parquet-binary-ids-not-utf8",
        "fit {s}/binary_ids.parquet -o {s}/m",
        "binary_ids.parquet row 39: item_id b'\\xff\\xfe' is not UTF-8",
    ),
    case(
        "fit-rq-vae-config-not-utf8",
        "fit {s}/e.parquet -o {s}/m --method rq-vae --config {s}/latin1.json",
        "latin1.json",
    ),
    # ---- semid assign MODEL_DIR EMB -o IDS
    case(
        "assign-missing-model-dir",
        "assign {s}/missing {s}/e.parquet -o {s}/out.parquet",
        "{s}/missing: no such model directory",
    ),
    case("assign-foreign-dir-as-model", "assign {s}/d {s}/e.parquet -o {s}/out.parquet", "{s}/d/config.json"),
    case(
        "assign-corrupt-weights",
        "assign {s}/model_bad_weights {s}/e.parquet -o {s}/out.parquet",
        "{s}/model_bad_weights/model.safetensors: cannot read weights",
    ),
    case(
        "assign-corrupt-config",
        "assign {s}/model_bad_config {s}/e.parquet -o {s}/out.parquet",
        "{s}/model_bad_config/config.json line 1: invalid JSON",
    ),
    case(
        "assign-missing-emb",
        "assign {s}/model {s}/missing.parquet -o {s}/out.parquet",
        "{s}/missing.parquet: no such file",
    ),
    case("assign-empty-npy", "assign {s}/model {s}/empty.npy -o {s}/out.parquet", "empty.npy: empty file"),
    case(
        "assign-registry-foreign-sqlite",
        "assign {s}/model {s}/e.parquet -o {s}/out.parquet --registry {s}/other.db",
        "{s}/other.db is an SQLite database of another application",
    ),
    case(
        "assign-registry-random-bytes",
        "assign {s}/model {s}/e.parquet -o {s}/out.parquet --registry {s}/random.parquet",
        "{s}/random.parquet: not a readable semid registry",
    ),
    case(
        "assign-output-is-input", "assign {s}/model {s}/e.parquet -o {s}/e.parquet", "{s}/e.parquet: " + SAME
    ),
    case("assign-output-is-model-dir", "assign {s}/model {s}/e.parquet -o {s}/model", "{s}/model: " + SAME),
    case(
        "assign-registry-is-input",
        "assign {s}/model {s}/e.parquet -o {s}/out.parquet --registry {s}/e.parquet",
        "{s}/e.parquet: " + SAME,
    ),
    case(
        "assign-output-under-file", "assign {s}/model {s}/e.parquet -o {s}/afile/out.parquet", NOT_A_FILE_DIR
    ),
    case(
        "assign-output-is-existing-dir",
        "assign {s}/model {s}/e.parquet -o {s}/dir.parquet",
        "{s}/dir.parquet is a directory; the output is an IDs file",
    ),
    case("assign-output-dir-with-foreign-files", "assign {s}/model {s}/e.parquet -o {s}/d", FOREIGN_FILES),
    case(
        "assign-output-read-only",
        "assign {s}/model {s}/e.parquet -o {s}/ro/out.parquet",
        NO_WRITE,
        readonly=True,
    ),
    case(
        "assign-registry-read-only",
        "assign {s}/model {s}/e.parquet -o {s}/out.parquet --registry {s}/ro/ids.db",
        NO_WRITE,
        readonly=True,
    ),
    case(
        "assign-streamed-batch-size-0",
        "assign {s}/model {s}/e.parquet -o {s}/outdir --batch-size 0",
        "batch_size=0",
    ),
    case(
        "assign-device-cuda",
        "assign {s}/model {s}/e.parquet -o {s}/out.parquet --device cuda",
        NO_CUDA,
        cuda=True,
    ),
    case(
        "assign-ids-txt-not-utf8",
        "assign {s}/model {s}/e.npy --ids {s}/bad_ids.txt -o {s}/out.parquet",
        "bad_ids.txt line 40: byte 0xff is not UTF-8",
    ),
    case(
        "assign-parquet-binary-ids-not-utf8",
        "assign {s}/model {s}/binary_ids.parquet -o {s}/out.parquet",
        "binary_ids.parquet row 39",
    ),
    case(
        "assign-streamed-binary-ids-not-utf8",
        "assign {s}/model {s}/binary_ids.parquet -o {s}/outdir",
        "binary_ids.parquet",
    ),
    # ---- semid stats PATH
    case("stats-missing", "stats {s}/missing.parquet", "{s}/missing.parquet: no such file"),
    case("stats-foreign-dir", "stats {s}/d", "{s}/d: no such file, IDs directory or model directory"),
    case("stats-random-bytes-parquet", "stats {s}/random.parquet", "{s}/random.parquet: " + CORRUPT_PARQUET),
    case(
        "stats-folder-of-other-parquet",
        "stats {s}/other_parts",
        "{s}/other_parts/a.parquet: missing column(s) semantic_id, codes (has item_id, title)",
    ),
    case(
        "stats-parquet-other-columns", "stats {s}/e.parquet", "{s}/e.parquet: missing column(s) semantic_id"
    ),
    case(
        "stats-corrupt-model-config", "stats {s}/model_bad_config", "{s}/model_bad_config/config.json line 1"
    ),
    case("stats-emb-empty-npy", "stats {s}/model --emb {s}/empty.npy", "empty.npy: empty file"),
    case(
        "stats-emb-ids-txt-not-utf8",
        "stats {s}/model --emb {s}/e.npy --ids {s}/bad_ids.txt",
        "bad_ids.txt line 40: byte 0xff is not UTF-8",
    ),
    case(
        "stats-emb-binary-ids-not-utf8",
        "stats {s}/model --emb {s}/binary_ids.parquet",
        "binary_ids.parquet row 39",
    ),
    # ---- semid report PATH -o HTML
    case("report-missing", "report {s}/missing.parquet -o {s}/r.html", "{s}/missing.parquet: no such file"),
    case("report-foreign-dir", "report {s}/d -o {s}/r.html", "{s}/d: no .parquet part files"),
    case(
        "report-random-bytes-parquet",
        "report {s}/random.parquet -o {s}/r.html",
        "{s}/random.parquet: " + CORRUPT_PARQUET,
    ),
    case(
        "report-corrupt-weights",
        "report {s}/model_bad_weights -o {s}/r.html",
        "{s}/model_bad_weights/model.safetensors",
    ),
    case("report-output-is-input", "report {s}/ids.parquet -o {s}/ids.parquet", "{s}/ids.parquet: " + SAME),
    case(
        "report-output-is-emb",
        "report {s}/model --emb {s}/e.parquet -o {s}/e.parquet",
        "{s}/e.parquet: " + SAME,
    ),
    case("report-output-under-file", "report {s}/ids.parquet -o {s}/afile/r.html", NOT_A_FILE_DIR),
    case(
        "report-output-is-existing-dir",
        "report {s}/ids.parquet -o {s}/adir",
        "{s}/adir is a directory; the output is an HTML file",
    ),
    case("report-output-read-only", "report {s}/ids.parquet -o {s}/ro/r.html", NO_WRITE, readonly=True),
    case(
        "report-catalogue-not-utf8",
        "report {s}/ids.parquet -o {s}/r.html --catalogue {s}/bad_cat.jsonl",
        "bad_cat.jsonl line 2: byte 0xff",
    ),
    case(
        "report-emb-binary-ids-not-utf8",
        "report {s}/ids.parquet -o {s}/r.html --emb {s}/binary_ids.parquet",
        "binary_ids.parquet row 39",
    ),
    # ---- semid embed CATALOGUE -o EMB
    case("embed-missing-catalogue", "embed {s}/missing.jsonl -o {s}/out.parquet", "{s}/missing.jsonl"),
    case("embed-empty-jsonl", "embed {s}/empty.jsonl -o {s}/out.parquet", "empty.jsonl: no JSON objects"),
    case(
        "embed-random-bytes-parquet",
        "embed {s}/random.parquet -o {s}/out.parquet",
        "random.parquet: " + CORRUPT_PARQUET,
    ),
    case(
        "embed-parquet-other-columns",
        "embed {s}/other.parquet -o {s}/out.parquet",
        "other.parquet: no column 'item_id'",
    ),
    case("embed-foreign-dir", "embed {s}/d -o {s}/out.parquet", "{s}/d: no dataset files found"),
    case(
        "embed-streamed-parquet-with-a-path-column",
        "embed {s}/path_cat.parquet -o {s}/pathdir",
        "{s}/path_cat.parquet: a column is named 'path', which a streamed embed uses for each row's file; "
        "rename it, or embed in memory (-o FILE.parquet)",
    ),
    case(
        "embed-streamed-jsonl-with-a-path-column",
        "embed {s}/path_cat.jsonl -o {s}/pathdir",
        "{s}/path_cat.jsonl: a column is named 'path'",
    ),
    case(
        "embed-foreign-dir-as-model",
        "embed {s}/cat.jsonl -o {s}/out.parquet --model {s}/d",
        "{s}/d: cannot load",
    ),
    case("embed-output-is-input", "embed {s}/cat.jsonl -o {s}/cat.jsonl", "{s}/cat.jsonl: " + SAME),
    case("embed-output-under-file", "embed {s}/cat.jsonl -o {s}/afile/out.parquet", NOT_A_FILE_DIR),
    case(
        "embed-output-is-existing-dir",
        "embed {s}/cat.jsonl -o {s}/dir.parquet",
        "{s}/dir.parquet is a directory; the output is an embeddings file",
    ),
    case("embed-output-dir-with-foreign-files", "embed {s}/cat.jsonl -o {s}/d", FOREIGN_FILES),
    case("embed-output-read-only", "embed {s}/cat.jsonl -o {s}/ro/out.parquet", NO_WRITE, readonly=True),
    case(
        "embed-cache-dir-is-a-file",
        "embed {s}/cat.jsonl -o {s}/out.parquet --cache-dir {s}/afile",
        "{s}/afile: cannot create the embedding cache directory",
    ),
    case("embed-batch-size-0", "embed {s}/cat.jsonl -o {s}/out.parquet --batch-size 0", "batch_size=0"),
    case("embed-dim-negative", "embed {s}/cat.jsonl -o {s}/out.parquet --dim -5", "dim=-5"),
    case("embed-rows-per-part-0", "embed {s}/cat.jsonl -o {s}/outdir --rows-per-part 0", "rows_per_part=0"),
    case("embed-device-cuda", "embed {s}/cat.jsonl -o {s}/out.parquet --device cuda", NO_CUDA, cuda=True),
    case(
        "embed-jsonl-not-utf8",
        "embed {s}/bad_cat.jsonl -o {s}/out.parquet",
        "bad_cat.jsonl line 2: byte 0xff",
    ),
    case(
        "embed-parquet-binary-ids-not-utf8",
        "embed {s}/binary_cat.parquet -o {s}/out.parquet",
        "binary_cat.parquet",
    ),
    case(
        "embed-streamed-binary-ids-not-utf8",
        "embed {s}/binary_cat.parquet -o {s}/outdir",
        "binary_cat.parquet",
    ),
    # ---- semid train sasrec|tiger DATA -o RUN
    case("train-missing-data", "train sasrec {s}/missing -o {s}/newrun", "{s}/missing: no such file"),
    case("train-foreign-dir-as-data", "train sasrec {s}/d -o {s}/newrun", "{s}/d: no dataset files found"),
    case(
        "train-random-bytes-parquet",
        "train sasrec {s}/random.parquet -o {s}/newrun",
        "random.parquet: " + CORRUPT_PARQUET,
    ),
    case(
        "train-ids-random-bytes",
        "train tiger {s}/data --ids {s}/random.parquet -o {s}/newrun",
        "{s}/random.parquet: " + CORRUPT_PARQUET,
    ),
    case(
        "train-ids-other-columns",
        "train tiger {s}/data --ids {s}/e.parquet -o {s}/newrun",
        "{s}/e.parquet: missing column(s) semantic_id",
    ),
    case(
        "train-config-corrupt-json",
        "train sasrec {s}/data -o {s}/newrun --config {s}/model_bad_config/config.json",
        "{s}/model_bad_config/config.json line 1: invalid JSON",
    ),
    case("train-resume-foreign-dir", "train tiger -o {s}/d --resume", "{s}/d: no checkpoint to resume"),
    case(
        "train-resume-corrupt-config",
        "train tiger -o {s}/run_bad_config --resume",
        "run_bad_config/config.json",
    ),
    case("train-output-is-input", "train sasrec {s}/data -o {s}/data", "{s}/data: " + SAME),
    case(
        "train-output-is-ids",
        "train tiger {s}/data --ids {s}/ids.parquet -o {s}/ids.parquet",
        "{s}/ids.parquet: " + SAME,
    ),
    case(
        "train-output-is-a-file",
        "train sasrec {s}/data -o {s}/afile",
        "{s}/afile is a file; the output is a run",
    ),
    case("train-output-under-file", "train sasrec {s}/data -o {s}/afile/run", NOT_A_FILE_DIR),
    case("train-output-dir-with-foreign-files", "train sasrec {s}/data -o {s}/d", FOREIGN_FILES),
    case("train-output-read-only", "train sasrec {s}/data -o {s}/ro/run", NO_WRITE, readonly=True),
    case("train-epochs-0", "train sasrec {s}/data -o {s}/newrun --epochs 0", "epochs=0"),
    case("train-seed-negative", "train sasrec {s}/data -o {s}/newrun --seed -1", "seed=-1"),
    case(
        "train-max-minutes-negative", "train sasrec {s}/data -o {s}/newrun --max-minutes -1", "max_minutes=-1"
    ),
    case("train-threads-0", "train sasrec {s}/data -o {s}/newrun --threads 0", "num_threads=0"),
    case("train-device-cuda", "train sasrec {s}/data -o {s}/newrun --device cuda", NO_CUDA, cuda=True),
    case(
        "train-csv-not-utf8",
        "train sasrec {s}/bad_data -o {s}/newrun",
        "interactions.csv",
    ),
    case(
        "train-config-not-utf8",
        "train sasrec {s}/data -o {s}/newrun --config {s}/latin1.json",
        "latin1.json",
    ),
    # ---- semid evaluate RUN
    case("evaluate-missing-run", "evaluate {s}/missing", "{s}/missing/config.json: no such file"),
    case("evaluate-foreign-dir", "evaluate {s}/d", "is {s}/d a semid run directory?"),
    case("evaluate-corrupt-weights", "evaluate {s}/run_bad_weights", "{s}/run_bad_weights/model.safetensors"),
    case("evaluate-corrupt-config", "evaluate {s}/run_bad_config", "{s}/run_bad_config/config.json line 1"),
    case(
        "evaluate-corrupt-items",
        "evaluate {s}/run_bad_items",
        "run_bad_items/items.parquet",
    ),
    case("evaluate-batch-size-0", "evaluate {s}/run --batch-size 0", "--batch-size 0"),
    case("evaluate-batch-size-negative", "evaluate {s}/run --batch-size -3", "--batch-size -3"),
    case("evaluate-beam-size-0", "evaluate {s}/run --beam-size 0", "--beam-size 0"),
    case("evaluate-device-cuda", "evaluate {s}/run --device cuda", NO_CUDA, cuda=True),
    # ---- semid recommend RUN --history ...
    case(
        "recommend-missing-run", "recommend {s}/missing --history i1", "{s}/missing/config.json: no such file"
    ),
    case("recommend-foreign-dir", "recommend {s}/d --history i1", "is {s}/d a semid run directory?"),
    case(
        "recommend-corrupt-weights",
        "recommend {s}/run_bad_weights --history i1",
        "{s}/run_bad_weights/model.safetensors",
    ),
    case(
        "recommend-corrupt-items",
        "recommend {s}/run_bad_items --history i1",
        "run_bad_items/items.parquet",
    ),
    case("recommend-k-0", "recommend {s}/run --history i1 -k 0", "-k 0"),
    case("recommend-beam-size-negative", "recommend {s}/run --history i1 --beam-size -1", "--beam-size -1"),
    case("recommend-device-cuda", "recommend {s}/run --history i1 --device cuda", NO_CUDA, cuda=True),
    # ---- semid data stats PATH
    case("data-stats-missing", "data stats {s}/missing.jsonl", "{s}/missing.jsonl: no such file"),
    case("data-stats-empty-jsonl", "data stats {s}/empty.jsonl", "empty.jsonl: no JSON objects"),
    case(
        "data-stats-random-bytes-parquet",
        "data stats {s}/random.parquet",
        "random.parquet: " + CORRUPT_PARQUET,
    ),
    case(
        "data-stats-parquet-other-columns",
        "data stats {s}/other.parquet",
        "other.parquet: no column 'item_id'",
    ),
    case(
        "data-stats-duplicate-header",
        "data stats {s}/dup_header.csv",
        "dup_header.csv: column 'item_id' appears twice; rename one",
    ),
    case(
        "data-stats-list-ids",
        "data stats {s}/list_ids.parquet",
        "item_id column holds values (list<element: int64>); ids should be text or integers",
    ),
    case(
        "data-stats-csv-wrong-encoding",
        "data stats {s}/dup_header.csv --encoding utf-16",
        "dup_header.csv: not readable as utf-16 (",
    ),
    case("data-stats-device-file", "data stats /dev/null", "/dev/null: not a regular file or a directory"),
    case(
        "data-stats-empty-p5",
        "data stats {s}/p5_empty/sequential_data.txt",
        "sequential_data.txt: the file is empty",
    ),
    case("data-stats-foreign-sqlite", "data stats {s}/other.db", "{s}/other.db: unknown format"),
    case(
        "data-stats-max-bad-fraction-negative",
        "data stats {s}/data --max-bad-fraction -1",
        "max_bad_fraction=-1.0",
    ),
    case(
        "data-stats-max-bad-fraction-above-1",
        "data stats {s}/data --max-bad-fraction 2",
        "max_bad_fraction=2.0",
    ),
    case("data-stats-jsonl-not-utf8", "data stats {s}/bad_cat.jsonl", "bad_cat.jsonl line 2: byte 0xff"),
    case(
        "data-stats-csv-not-utf8",
        "data stats {s}/bad_data",
        "interactions.csv",
    ),
    case(
        "data-stats-parquet-binary-ids-not-utf8",
        "data stats {s}/binary_cat.parquet",
        "binary_cat.parquet",
    ),
    # ---- semid llm prepare CATALOGUE --ids IDS -o DIR
    case(
        "llm-prepare-missing-catalogue",
        "llm prepare {s}/missing --ids {s}/ids.parquet -o {s}/out",
        "{s}/missing: no such file",
    ),
    case(
        "llm-prepare-interactions-only",
        "llm prepare {s}/data/interactions.csv --ids {s}/ids.parquet -o {s}/out",
        "no item catalogue in {s}/data/interactions.csv: give the items file as well",
    ),
    case(
        "llm-prepare-foreign-dir",
        "llm prepare {s}/d --ids {s}/ids.parquet -o {s}/out",
        "{s}/d: no dataset files found",
    ),
    case(
        "llm-prepare-ids-random-bytes",
        "llm prepare {s}/data --ids {s}/random.parquet -o {s}/out",
        "{s}/random.parquet: " + CORRUPT_PARQUET,
    ),
    case(
        "llm-prepare-ids-other-columns",
        "llm prepare {s}/data --ids {s}/e.parquet -o {s}/out",
        "{s}/e.parquet: missing column(s)",
    ),
    case(
        "llm-prepare-output-is-input",
        "llm prepare {s}/data --ids {s}/ids.parquet -o {s}/data",
        "{s}/data: " + SAME,
    ),
    case(
        "llm-prepare-output-is-ids",
        "llm prepare {s}/data --ids {s}/ids.parquet -o {s}/ids.parquet",
        "{s}/ids.parquet: " + SAME,
    ),
    case(
        "llm-prepare-output-under-file",
        "llm prepare {s}/data --ids {s}/ids.parquet -o {s}/afile/out",
        NOT_A_FILE_DIR,
    ),
    case(
        "llm-prepare-output-dir-with-foreign-files",
        "llm prepare {s}/data --ids {s}/ids.parquet -o {s}/d",
        FOREIGN_FILES,
    ),
    case(
        "llm-prepare-output-read-only",
        "llm prepare {s}/data --ids {s}/ids.parquet -o {s}/ro/out",
        NO_WRITE,
        readonly=True,
    ),
    case(
        "llm-prepare-per-item-0",
        "llm prepare {s}/data --ids {s}/ids.parquet -o {s}/out --per-item 0",
        "n_per_item=0",
    ),
    case(
        "llm-prepare-seed-negative",
        "llm prepare {s}/data --ids {s}/ids.parquet -o {s}/out --seed -1",
        "random_state=-1",
    ),
    case(
        "llm-prepare-jsonl-not-utf8",
        "llm prepare {s}/bad_cat.jsonl --ids {s}/ids.parquet -o {s}/out",
        "bad_cat.jsonl line 2: byte 0xff",
    ),
    case(
        "llm-prepare-parquet-binary-ids-not-utf8",
        "llm prepare {s}/binary_cat.parquet --ids {s}/ids.parquet -o {s}/out",
        "binary_cat.parquet",
    ),
    # ---- semid llm train DATA -o DIR (every case fails before training)
    case("llm-train-missing-data", "llm train {s}/missing -o {s}/out", "{s}/missing: no such directory"),
    case("llm-train-foreign-dir", "llm train {s}/d -o {s}/out", "{s}/d: not a prepared directory"),
    case("llm-train-output-is-input", "llm train {s}/prepared -o {s}/prepared", "{s}/prepared: " + SAME),
    case("llm-train-output-is-a-file", "llm train {s}/prepared -o {s}/afile", "{s}/afile is a file"),
    case("llm-train-output-under-file", "llm train {s}/prepared -o {s}/afile/out", NOT_A_FILE_DIR),
    case("llm-train-output-dir-with-foreign-files", "llm train {s}/prepared -o {s}/d", FOREIGN_FILES),
    case("llm-train-output-read-only", "llm train {s}/prepared -o {s}/ro/out", NO_WRITE, readonly=True),
    case("llm-train-epochs-0", "llm train {s}/prepared -o {s}/out --epochs 0", "epochs=0.0"),
    case("llm-train-batch-size-0", "llm train {s}/prepared -o {s}/out --batch-size 0", "batch_size=0"),
    case(
        "llm-train-max-minutes-negative",
        "llm train {s}/prepared -o {s}/out --max-minutes -1",
        "max_minutes=-1.0",
    ),
    case("llm-train-device-cuda", "llm train {s}/prepared -o {s}/out --device cuda", NO_CUDA, cuda=True),
    case(
        "llm-train-hidden-size-0",
        "llm train {s}/prepared -o {s}/out --hidden-size 0 --no-query-prefix",
        "hidden",
    ),
    case(
        "llm-train-layers-0",
        "llm train {s}/prepared -o {s}/out --layers 0 --no-query-prefix",
        "layers",
    ),
    case(
        "llm-train-seed-negative",
        "llm train {s}/prepared -o {s}/out --seed -1 --no-query-prefix",
        "seed",
    ),
    # ---- semid llm ask MODEL_DIR QUERY
    case("llm-ask-missing-model", "llm ask {s}/missing 'red lipstick'", "{s}/missing: no such directory"),
    case("llm-ask-foreign-dir", "llm ask {s}/d 'red lipstick'", "{s}/d: not a semid language model"),
    case(
        "llm-ask-corrupt-meta",
        "llm ask {s}/llm_corrupt 'red lipstick'",
        "llm_corrupt",
    ),
    case(
        "llm-ask-corrupt-weights",
        "llm ask {s}/llm_bad_weights 'red lipstick'",
        "{s}/llm_bad_weights: not a readable language model (",
    ),
    case("llm-ask-empty-query", "llm ask {s}/d ''", "the query is empty"),
    # ---- semid serve RUN (start-up checks only: uvicorn.run is replaced by a failure)
    case("serve-missing-dir", "serve {s}/missing", "{s}/missing: no such directory"),
    case("serve-foreign-dir", "serve {s}/d", "{s}/d: found neither a run"),
    case("serve-corrupt-weights", "serve {s}/run_bad_weights", "{s}/run_bad_weights/model.safetensors"),
    case("serve-corrupt-items", "serve {s}/run_bad_items", "{s}/run_bad_items: not a readable run"),
    case(
        "serve-ids-random-bytes",
        "serve {s}/run --ids {s}/random.parquet",
        "{s}/random.parquet: " + CORRUPT_PARQUET,
    ),
    case("serve-ids-other-columns", "serve {s}/run --ids {s}/e.parquet", "{s}/e.parquet: missing column(s)"),
    case(
        "serve-embeddings-missing",
        "serve {s}/run --embeddings {s}/missing.parquet",
        "{s}/missing.parquet: no such file",
    ),
    case(
        "serve-embeddings-empty-npy",
        "serve {s}/run --embeddings {s}/empty.npy",
        "empty.npy",
    ),
    case(
        "serve-embeddings-binary-ids-not-utf8",
        "serve {s}/run --embeddings {s}/binary_ids.parquet",
        "binary_ids.parquet row 39",
    ),
    case("serve-llm-foreign-dir", "serve {s}/run --llm {s}/d", "{s}/d: no .safetensors weights"),
    case(
        "serve-llm-corrupt",
        "serve {s}/run --llm {s}/llm_corrupt",
        "{s}/llm_corrupt: not a readable language model",
    ),
    case("serve-port-negative", "serve {s}/run --port -1", "--port -1"),
    case("serve-threads-0", "serve {s}/run --threads 0", "--threads 0"),
    case("serve-max-batch-0", "serve {s}/run --max-batch 0", "max_batch=0"),
    case("serve-beam-size-0", "serve {s}/run --beam-size 0", "beam_size=0"),
    case("serve-device-cuda", "serve {s}/run --device cuda", NO_CUDA, cuda=True),
]


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*.tmp"))


@pytest.fixture
def scratch(base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the inputs, as the cwd; the embedding cache outside it; no server can start."""
    import uvicorn

    s = tmp_path / "s"
    shutil.copytree(base, s, symlinks=True)
    monkeypatch.chdir(s)
    monkeypatch.setenv("SEMID_CACHE_DIR", str(tmp_path / "embed-cache"))

    def no_server(*args, **kwargs):
        raise AssertionError("semid serve got past its start-up checks and would start a server")

    monkeypatch.setattr(uvicorn, "run", no_server)
    return s


def deny_writes_in(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make os.access (as semid._outputs calls it) say the user cannot write in ``folder``: the tests run as
    root in CI, where a chmod stops nothing."""
    import semid._outputs

    real = os.access
    folder = folder.resolve()

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and Path(path).resolve() == folder:
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(semid._outputs.os, "access", access)


def run_failing(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the CLI in-process; an exception that escapes main() is what a user sees as a traceback."""
    try:
        main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception as e:  # noqa: BLE001
        err = capsys.readouterr().err
        pytest.fail(f"Traceback: {type(e).__name__}: {e}\n{err}")
    else:
        code = 0
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("argv", "expect", "readonly"), CASES)
def test_bad_input_is_one_error_and_changes_nothing(
    argv: str, expect: str, readonly: bool, scratch: Path, monkeypatch, capsys
) -> None:
    import shlex

    s = scratch
    if readonly:
        deny_writes_in(monkeypatch, s / "ro")
    before = snapshot(s)
    code, err = run_failing([a.replace("{s}", str(s)) for a in shlex.split(argv)], capsys)

    assert code != 0, f"exit status 0\n{err}"
    line = error_line(err)
    assert expect.replace("{s}", str(s)) in line
    after = snapshot(s)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert changed == [], f"changed by a failed command: {changed}"
    assert leftovers(s) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only directory anyway")
def test_a_really_read_only_directory(scratch: Path, capsys) -> None:
    s = scratch
    (s / "ro").chmod(0o555)
    try:
        before = snapshot(s)
        code, err = run_failing(["fit", str(s / "e.parquet"), "-o", str(s / "ro" / "m")], capsys)
        assert code == 1 and NO_WRITE.replace("{s}", str(s)) in error_line(err)
        assert snapshot(s) == before and leftovers(s) == []
    finally:
        (s / "ro").chmod(0o755)

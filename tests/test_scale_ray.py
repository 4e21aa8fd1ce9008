"""`--engine ray` on a local 2-CPU Ray cluster: the same IDs as one process, a killed worker costs nothing,
bad parts fail the job naming the file and leave no output."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from conftest import clustered
from semid.embed.store import write_embeddings
from semid.errors import SemidError
from semid.ids import deduplicate
from semid.ids.table import read_ids
from semid.quantize import RQKMeans
from semid.scale.assign import assign_dataset

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

N, DIM, PARTS = 50_000, 16, 5


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    X = clustered(N, DIM, centres=2000, noise=0.3, seed=2)
    ids = np.array([f"sku-{i:06d}" for i in np.random.default_rng(1).permutation(N)], dtype=object)
    (root / "parts").mkdir()
    for p, rows in enumerate(np.array_split(np.arange(N), PARTS)):
        write_embeddings(root / "parts" / f"part-{p}.parquet", ids[rows], X[rows])
    model = RQKMeans(n_levels=3, codebook_size=[32, 32, 32], random_state=0).fit(X)
    model.save_pretrained(root / "model")
    base = model.encode(X)
    expected = deduplicate(base, "suffix", item_ids=ids).codes
    order = np.argsort(ids.astype(str))
    return root, ids[order], expected[order], base[order]


def by_item(path):
    t = read_ids(path)
    order = np.argsort(t.item_ids.astype(str))
    return t.item_ids[order], t.codes[order], t.base_codes[order]


def test_ray_output_equals_the_single_process_output_item_for_item(cluster, data, tmp_path):
    root, ids, expected, base = data
    res = assign_dataset(root / "model", root / "parts", tmp_path / "ids", engine="ray", batch_size=4096,
                         progress=False)  # fmt: skip
    assert res.engine == "ray" and res.n_items == N and res.n_buckets >= 2
    got_ids, got_codes, got_base = by_item(tmp_path / "ids")
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got_base, base)
    np.testing.assert_array_equal(got_codes, expected)


def test_a_killed_worker_is_retried_and_every_item_comes_out_exactly_once(cluster, data, tmp_path):
    root, ids, expected, _ = data
    outcome: dict = {}

    def job():
        try:
            outcome["result"] = assign_dataset(root / "model", root / "parts", tmp_path / "ids", engine="ray",
                                               batch_size=1000, progress=False)  # fmt: skip
        except BaseException as e:  # noqa: BLE001
            outcome["error"] = e

    thread = threading.Thread(target=job)
    thread.start()
    killed = None
    deadline = time.time() + 120
    while thread.is_alive() and killed is None and time.time() < deadline:
        for p in psutil.process_iter(["cmdline"]):
            if "EncodeBatch" in " ".join(p.info["cmdline"] or []) and time.time() - p.create_time() > 1.0:
                os.kill(p.pid, signal.SIGKILL)  # an encoder worker, mid-job
                killed = p.pid
                break
        time.sleep(0.05)
    thread.join()
    assert killed is not None, "no encoder worker was seen to kill"
    assert "error" not in outcome, outcome.get("error")
    got_ids, got_codes, _ = by_item(tmp_path / "ids")
    np.testing.assert_array_equal(got_ids, ids)  # complete and duplicate-free
    np.testing.assert_array_equal(got_codes, expected)


def test_a_part_with_the_wrong_dimension_fails_the_job_naming_the_file(cluster, data, tmp_path):
    root = data[0]
    X = clustered(300, DIM, seed=5)
    src = tmp_path / "parts"
    src.mkdir()
    write_embeddings(src / "part-0.parquet", [f"a{i}" for i in range(200)], X[:200])
    write_embeddings(src / "part-1.parquet", [f"b{i}" for i in range(100)], X[200:, :15])
    with pytest.raises(SemidError) as e:
        assign_dataset(root / "model", src, tmp_path / "ids", engine="ray", progress=False)
    assert str(e.value) == "part-1.parquet: item_id 'b0': 15 values, expected 16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts"]  # no output, no temp directory


def test_a_corrupt_part_fails_before_the_cluster_does_any_work(cluster, data, tmp_path):
    root = data[0]
    src = tmp_path / "parts"
    src.mkdir()
    write_embeddings(src / "part-0.parquet", ["a", "b"], clustered(2, DIM))
    (src / "part-1.parquet").write_bytes(b"garbage")
    with pytest.raises(SemidError, match=r"^part-1.parquet: not a readable Parquet file"):
        assign_dataset(root / "model", src, tmp_path / "ids", engine="ray", progress=False)
    assert not (tmp_path / "ids").exists()


def test_the_cli_joins_an_existing_cluster_by_address(data, tmp_path):
    """A cluster started elsewhere (here: another process), `semid assign --engine ray --address GCS`."""
    import subprocess
    import sys

    root = data[0]
    head = subprocess.Popen(
        [sys.executable, "-c", "import ray, sys, time; ray.init(num_cpus=2, include_dashboard=False); "
         "print(ray.get_runtime_context().gcs_address, flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        address = head.stdout.readline().strip()
        assert address, "the head process did not start a cluster"
        src = tmp_path / "parts"
        src.mkdir()
        X = clustered(3000, DIM, seed=7)
        for p in range(3):
            rows = slice(p * 1000, (p + 1) * 1000)
            write_embeddings(src / f"p{p}.parquet", [f"x{p}-{i}" for i in range(1000)], X[rows])
        proc = subprocess.run(
            [sys.executable, "-m", "semid", "assign", str(root / "model"), str(src), "-o", str(tmp_path / "ids"),
             "--engine", "ray", "--address", address],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "3,000 Semantic IDs" in proc.stdout and "engine ray" in proc.stdout
        assert len(read_ids(tmp_path / "ids")) == 3000
    finally:
        head.stdin.close()  # the head's driver exits and takes its cluster down
        head.wait(timeout=120)

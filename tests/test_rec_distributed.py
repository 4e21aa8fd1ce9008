"""Data-parallel training (torchrun and Ray Train, gloo on CPU): N ranks train exactly as one process.

Every multi-rank run here is a real job of separate processes: `torchrun --nproc-per-node 2 -m semid train`
or `semid train --engine ray --num-workers 2` on a local 2-CPU Ray cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import semid._distributed as distributed_impl
import semid.cli.rec  # noqa: F401  (registers the commands)
from conftest import TINY_TIGER, free_port, write_grid_ids, write_walk_shop
from semid.cli import main
from semid.errors import SemidError
from semid.rec import distributed
from semid.rec.data import RecData
from semid.rec.evaluate import evaluate
from semid.rec.train import load_model, read_metrics, split_examples

N_ITEMS = 40
# dropout 0: with dropout the ranks draw their own masks, and only the random streams differ
# TIGER also keeps a weight average (ema_decay): what it saves is then the average, which every rank updates
# after the same all-reduced steps, so the two-rank model equals the one-process model here too
TIGER = {
    "model": TINY_TIGER["model"],
    "train": {**TINY_TIGER["train"], "epochs": 2, "batch_size": 32, "ema_decay": 0.9},
}
SASREC = {
    "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_ff": 64, "dropout": 0.0, "max_len": 8},
    "train": {**TINY_TIGER["train"], "epochs": 2, "batch_size": 24},
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def torchrun(n: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n),
            "--master-port", str(free_port()), "-m", "semid", *args]  # fmt: skip


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return int(exc.value.code or 0), capsys.readouterr().err


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    (root / "data").mkdir()
    write_walk_shop(root / "data", N_ITEMS, n_users=120, lengths=(5, 10))
    write_grid_ids(root / "ids.parquet", N_ITEMS)
    (root / "tiger.json").write_text(json.dumps(TIGER))
    (root / "sasrec.json").write_text(json.dumps(SASREC))
    return root


def train_args(shop: Path, model: str, out: Path) -> list[str]:
    ids = ["--ids", str(shop / "ids.parquet")] if model == "tiger" else []
    return ["train", model, str(shop / "data"), *ids, "-o", str(out), "--config", str(shop / f"{model}.json"),
            "--quiet", "--threads", "1"]  # fmt: skip


@pytest.fixture(scope="module", params=["tiger", "sasrec"])
def pair(request: pytest.FixtureRequest, shop: Path) -> tuple[Path, Path]:
    """The same run trained by one process and by two torchrun ranks."""
    model = request.param
    one, two = shop / f"{model}-1", shop / f"{model}-2"
    subprocess.run([sys.executable, "-m", "semid", *train_args(shop, model, one)], env=ENV, check=True,
                   capture_output=True)  # fmt: skip
    job = subprocess.run(torchrun(2, *train_args(shop, model, two)), env=ENV, capture_output=True, text=True)
    assert job.returncode == 0, job.stderr[-3000:]
    return one, two


def test_two_ranks_log_the_losses_of_one_process_with_the_same_global_batch(pair) -> None:
    one, two = (read_metrics(run) for run in pair)
    assert [r["step"] for r in one] == [r["step"] for r in two]  # global batches: the same step count
    for a, b in zip(one, two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["world_size"] == 2 and "world_size" not in a
    assert one[-1]["loss"] < one[0]["loss"]  # it learned something


def test_two_ranks_end_with_the_weights_of_one_process(pair) -> None:
    one, two = (load_file(str(run / "model.safetensors")) for run in pair)
    assert one.keys() == two.keys()
    for name in one:
        a, b = one[name], two[name]
        if name.endswith("attn.qkv.bias"):
            # The key bias shifts every score of a query by the same amount, which softmax ignores: its true
            # gradient is 0, and Adam scales the float noise of a zero gradient up to lr-sized steps, which
            # differ with summation order. Compare the query and value biases only.
            d = len(a) // 3
            a, b = torch.cat([a[:d], a[2 * d :]]), torch.cat([b[:d], b[2 * d :]])
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


def test_the_run_records_world_size_and_backend_and_rank_0_alone_writes(pair) -> None:
    one, two = (json.loads((run / "config.json").read_text()) for run in pair)
    assert one["distributed"] == {"world_size": 1, "backend": "none"}
    assert two["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert len(read_metrics(pair[1])) == 2  # one record per epoch, not one per rank
    assert sorted(p.name for p in pair[1].iterdir()) == sorted(p.name for p in pair[0].iterdir())


def test_a_two_rank_run_resumes_on_one_process(pair, capsys) -> None:
    """Batches are global, so the world size may change between sessions; the run says which it had."""
    two = pair[1]
    code, err = run_cli(["train", two.name.split("-")[0], "-o", str(two), "--resume", "--epochs", "3",
                         "--quiet", "--threads", "1"], capsys)  # fmt: skip
    assert code == 0, err
    records = read_metrics(two)
    assert [r["epoch"] for r in records] == [1, 2, 3] and "world_size" not in records[-1]
    assert json.loads((two / "config.json").read_text())["distributed"]["world_size"] == 1


def _evaluate_on_two_ranks(rank: int, run_dir: str, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    group = distributed.setup("cpu")
    model, data = load_model(run_dir), RecData.load(run_dir)
    res = evaluate(model, split_examples(model, data, "test"), batch_size=16, group=group)
    Path(out, f"rank{rank}.json").write_text(json.dumps([res.metrics, res.n_users, res.invalid_rate]))
    torch.distributed.destroy_process_group()


def test_sharded_evaluation_equals_single_process_evaluation_exactly(pair, tmp_path) -> None:
    run_dir = pair[0]
    torch.multiprocessing.spawn(_evaluate_on_two_ranks, args=(str(run_dir), free_port(), str(tmp_path)),
                                nprocs=2)  # fmt: skip
    model, data = load_model(run_dir), RecData.load(run_dir)
    alone = evaluate(model, split_examples(model, data, "test"), batch_size=16)
    for rank in (0, 1):
        metrics, n_users, invalid = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert metrics == alone.metrics  # exactly: every user decoded in the same batch as alone
        assert (n_users, invalid) == (alone.n_users, alone.invalid_rate)


def test_a_killed_worker_leaves_a_resumable_run(shop: Path) -> None:
    """SIGKILL one rank mid-training: torchrun stops the job, the last checkpoint is whole, and
    `--resume` on two ranks finishes the run."""
    import psutil

    run_dir = shop / "killed"
    args = train_args(shop, "tiger", run_dir) + ["--epochs", "400"]
    job = subprocess.Popen(torchrun(2, *args), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while len(read_metrics(run_dir)) < 3:
            assert job.poll() is None and time.time() < deadline, "the job did not start training"
            time.sleep(0.05)
        workers = [
            p for p in psutil.Process(job.pid).children(recursive=True) if "semid" in " ".join(p.cmdline())
        ]
        assert len(workers) == 2
        os.kill(workers[-1].pid, signal.SIGKILL)
        job.wait(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    done = read_metrics(run_dir)[-1]["epoch"]
    assert done < 400
    resume = ["train", "tiger", "-o", str(run_dir), "--resume", "--epochs", str(done + 2), "--quiet",
              "--threads", "1"]  # fmt: skip
    again = subprocess.run(torchrun(2, *resume), env=ENV, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r["epoch"] for r in read_metrics(run_dir)] == list(range(1, done + 3))


def test_engine_ray_trains_checkpoints_and_resumes_on_a_local_cluster(shop: Path, capsys) -> None:
    pytest.importorskip("ray.train")
    run_dir = shop / "ray"
    args = train_args(shop, "tiger", run_dir) + ["--engine", "ray", "--num-workers", "2"]
    code, err = run_cli(args, capsys)
    assert code == 0, err
    records = read_metrics(run_dir)
    assert [(r["epoch"], r["world_size"]) for r in records] == [(1, 2), (2, 2)]
    assert (run_dir / "checkpoints" / "last" / "trainer.json").is_file()
    resume = ["train", "tiger", "-o", str(run_dir), "--resume", "--epochs", "3", "--quiet", "--engine", "ray",
              "--num-workers", "2"]  # fmt: skip
    code, err = run_cli(resume, capsys)
    assert code == 0, err
    assert [r["epoch"] for r in read_metrics(run_dir)] == [1, 2, 3]
    assert json.loads((run_dir / "config.json").read_text())["distributed"] == {
        "world_size": 2,
        "backend": "gloo",
    }


# --------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--num-workers", "2"], "--address, --num-workers and --gpus-per-worker apply to --engine ray"),
        (["--engine", "ray", "--num-workers", "0"], "--num-workers 0 should be at least 1"),
        (["--engine", "ray", "--gpus-per-worker", "-1"], "--gpus-per-worker -1 should be >= 0"),
    ],
)
def test_engine_options_are_checked_before_any_work(shop: Path, tmp_path, capsys, extra, message) -> None:
    code, err = run_cli(train_args(shop, "tiger", tmp_path / "run") + extra, capsys)
    assert code != 0 and err.strip() == f"Error: {message}"
    assert not (tmp_path / "run").exists()


def test_engine_ray_under_torchrun_is_one_clear_error(shop: Path, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, err = run_cli(train_args(shop, "tiger", tmp_path / "run") + ["--engine", "ray"], capsys)
    assert code != 0 and "--engine ray starts its own workers: do not launch it with torchrun" in err


def test_a_world_size_without_a_rendezvous_names_what_is_missing(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(SemidError, match="MASTER_ADDR, MASTER_PORT, RANK are not set: launch with torchrun"):
        distributed.setup("cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(SemidError, match="WORLD_SIZE='two' should be a positive integer"):
        distributed.setup("cpu")


RANK_SCRIPT = """
import atexit
import torch
import torch.distributed as dist
from semid._distributed import setup
group = setup("cpu")
dist.all_reduce(torch.ones(1))
atexit._run_exitfuncs()  # what the interpreter runs first at exit, while it is still whole
print(group.rank, group.world_size, dist.is_initialized())
"""


def test_a_rank_destroys_the_group_it_started_at_exit() -> None:
    """setup() registers the teardown that destroys the group it started while the interpreter is whole."""
    port = str(free_port())

    def rank_env(r: int) -> dict[str, str]:
        return {**ENV, "WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": str(r), "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port}  # fmt: skip

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RANK_SCRIPT],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=rank_env(r),
        )
        for r in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-1000:] for _, err in outs]
    assert [out.split() for out, _ in outs] == [["0", "2", "False"], ["1", "2", "False"]]


EXIT_SCRIPT = """
import sys
from semid._distributed import exit_rank
print("summary table", end="")  # block-buffered into a pipe: lost unless exit_rank flushes it
sys.stderr.write("Error: last words")
exit_rank(3)
print("never")
"""


def test_exit_rank_flushes_what_the_rank_wrote_and_keeps_its_exit_status() -> None:
    env = {k: v for k, v in ENV.items() if k != "PYTHONUNBUFFERED"}
    job = subprocess.run([sys.executable, "-c", EXIT_SCRIPT], env=env, capture_output=True, text=True)
    assert (job.returncode, job.stdout, job.stderr) == (3, "summary table", "Error: last words")


@pytest.mark.parametrize(("argv", "code"), [(["--help"], 0), (["data", "stats", "/no/such/dir"], 1)])
def test_a_torchrun_rank_of_the_cli_ends_through_exit_rank(monkeypatch, capsys, argv, code) -> None:
    """Under torchrun, `semid` leaves through exit_rank (no interpreter finalization, where a gloo worker
    thread can abort a finished rank), with the command's own exit status."""
    ended: list[int] = []

    def fake_exit(status: int) -> None:
        ended.append(status)
        raise SystemExit(status)  # the real one never returns

    monkeypatch.setattr(distributed_impl, "started_here", lambda: True)
    monkeypatch.setattr(distributed_impl, "exit_rank", fake_exit)
    assert run_cli(argv, capsys)[0] == code
    assert ended == [code]


def test_without_a_group_the_cli_exits_as_usual(monkeypatch, capsys) -> None:
    monkeypatch.setattr(
        distributed_impl, "exit_rank", lambda status: pytest.fail("exit_rank without a group")
    )
    assert not distributed_impl.started_here()
    assert run_cli(["--help"], capsys)[0] == 0


def test_one_process_has_no_group_and_keeps_every_example() -> None:
    group = distributed.setup("cpu")
    assert group == distributed.SINGLE and not group.enabled
    idx = np.arange(7)
    np.testing.assert_array_equal(distributed.shard(idx, group), idx)


def test_shards_of_a_global_batch_cover_it_once_in_order() -> None:
    idx = np.arange(10) * 3
    parts = [distributed.shard(idx, distributed.Dist(rank=r, world_size=3)) for r in range(3)]
    assert [len(p) for p in parts] == [4, 3, 3]
    np.testing.assert_array_equal(np.concatenate(parts), idx)
    assert [len(distributed.shard(np.arange(1), distributed.Dist(rank=r, world_size=2))) for r in (0, 1)] == [
        1,
        0,
    ]

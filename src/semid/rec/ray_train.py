"""Data-parallel training on a Ray cluster: :func:`fit` run by N Ray Train workers (``--engine ray``).

    semid train tiger data/ --ids ids.parquet -o runs/tiger --engine ray --num-workers 4 [--address auto]

Ray Train's ``TorchTrainer`` starts N worker processes and the torch process group between them (gloo on
CPU, NCCL with ``--gpus-per-worker``); each worker then runs the ordinary :func:`semid.rec.train.fit`, which
finds the group already started (:func:`semid.rec.distributed.setup`) and trains as it would under
torchrun: global batches split over ranks, rank 0 writing the run directory. The run directory must be on
a filesystem every worker can read and write (any path on a one-machine cluster; shared storage across
machines), since rank 0 writes checkpoints there and every rank reads them on resume.

A retried worker group (``max_failures``) continues from the run's last checkpoint, as ``--resume`` would.
The data travels to the workers with the training function (Ray's object store), so it is held once per
worker, as with torchrun.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from semid._ray import ray_session, unwrap_ray_error
from semid.errors import SemidError
from semid.rec.checkpoints import read_checkpoint, read_metrics
from semid.rec.data import RecData
from semid.rec.io import LAST, TRAINER_NAME


def fit_on_ray(
    model_type: str,
    data: RecData | None,
    run_dir: str | os.PathLike,
    *,
    num_workers: int,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    address: str | None = None,
    model_config: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
    resume: bool = False,
    notes: dict[str, Any] | None = None,
    max_failures: int = 0,
) -> Any:
    """Train like :func:`semid.rec.train.fit`, on ``num_workers`` Ray Train workers; returns its TrainResult.

    ``address``: an existing cluster ("auto", "ray://host:10001"); by default a local cluster with
    ``num_workers * cpus_per_worker`` CPUs is started for the job and stopped after it. With
    ``gpus_per_worker > 0`` every worker trains on its own GPU with NCCL.
    """
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise SemidError(f"num_workers={num_workers!r} should be a whole number >= 1")
    if gpus_per_worker < 0 or cpus_per_worker <= 0:
        raise SemidError("gpus_per_worker should be >= 0 and cpus_per_worker > 0")
    try:
        import ray.train
        from ray.train.torch import TorchConfig, TorchTrainer
    except ImportError:
        raise SemidError("--engine ray needs Ray Train: pip install 'semid[ray]'") from None
    from semid.rec.train import TrainResult

    run_dir = Path(run_dir).resolve()
    if not resume and (run_dir / LAST / TRAINER_NAME).is_file():
        raise SemidError(
            f"{run_dir} already holds a run; resume it (resume=True) or choose another directory"
        )
    train_options = dict(train_config or {})
    if gpus_per_worker > 0:
        train_options.setdefault("device", "cuda")

    def train_loop() -> None:  # runs on every worker
        context = ray.train.get_context()
        os.environ["LOCAL_RANK"] = str(context.get_local_rank())
        from semid.rec.train import fit

        # a retried worker group continues from the last checkpoint
        again = resume or (run_dir / LAST / TRAINER_NAME).is_file()  # a new run's directory had none
        _, result = fit(
            model_type,
            None if again else data,
            run_dir,
            model_config=None if again else model_config,
            train_config=train_options,
            resume=again,
            notes=notes,
        )
        ray.train.report({"epochs": result.epochs})  # Ray Train's records; the run directory holds ours

    storage = tempfile.mkdtemp(prefix="semid-ray-train-")  # Ray Train's own records; we checkpoint ourselves
    try:
        with ray_session("ray", address, max(1, int(num_workers * cpus_per_worker)), progress=False):
            resources = {"CPU": cpus_per_worker}
            if gpus_per_worker > 0:
                resources["GPU"] = gpus_per_worker
            trainer = TorchTrainer(
                train_loop,
                torch_config=TorchConfig(backend="nccl" if gpus_per_worker > 0 else "gloo"),
                scaling_config=ray.train.ScalingConfig(
                    num_workers=num_workers, use_gpu=gpus_per_worker > 0, resources_per_worker=resources
                ),
                run_config=ray.train.RunConfig(
                    name="semid-train",
                    storage_path=storage,
                    failure_config=ray.train.FailureConfig(max_failures=max_failures),
                ),
            )
            try:
                outcome = trainer.fit()
            except Exception as e:  # noqa: BLE001  (Ray wraps worker errors in its own types)
                raise unwrap_ray_error(e) from None
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    del outcome  # Ray Train v2 keeps metrics only with its own checkpoints; rank 0 wrote ours
    return _result_from_run(run_dir, TrainResult)


def _result_from_run(run_dir: Path, result_type: type) -> Any:
    """The TrainResult of the session that just ended, read back from the run's last checkpoint."""
    meta = read_checkpoint(run_dir)
    state, train = meta["state"], meta["train"]
    if state["early_stopped"]:
        stopped = "early_stop"
    elif state["epoch"] >= train["epochs"]:
        stopped = "epochs"
    elif train["max_steps"] and state["step"] >= train["max_steps"]:
        stopped = "max_steps"
    else:
        stopped = "time"
    return result_type(
        best_epoch=state["best_epoch"],
        best_valid=dict(state["best_metrics"]),
        epochs=state["epoch"],
        steps=state["step"],
        seconds=state["seconds"],
        stopped=stopped,
        history=read_metrics(run_dir),
    )

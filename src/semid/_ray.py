"""The Ray cluster a command runs on: ``--engine ray [--address ADDR] [--num-workers N]``, shared by the
streamed ``assign``/``embed`` jobs (Ray Data) and by data-parallel training (Ray Train).

Ray is an optional extra (``semid[ray]``); nothing here imports it until a Ray engine is asked for.
"""

from __future__ import annotations

import numbers
import os
import re
from typing import Any

from semid.errors import SemidError


def check_engine(engine: str, num_workers: int | None) -> None:
    """``engine`` is ``"local"`` or ``"ray"``; ``num_workers``, when given, at least 1 (checked before any
    Ray cluster is started)."""
    if engine not in ("local", "ray"):
        raise SemidError(f"engine={engine!r} should be 'local' or 'ray'")
    if num_workers is not None and (
        isinstance(num_workers, bool) or not isinstance(num_workers, numbers.Integral) or num_workers < 1
    ):
        raise SemidError(f"num_workers={num_workers!r} should be a whole number >= 1 (or None: one per CPU)")


class ray_session:
    """``with _ray_session(engine, address, n) as workers``: the Ray cluster to use (started and stopped
    here unless one is already running in this process or ``address`` names one); 1 for the local engine."""

    def __init__(
        self, engine: str, address: str | None, num_workers: int | None, progress: bool = True
    ) -> None:
        self.engine, self.address, self.num_workers, self.progress = engine, address, num_workers, progress
        self.started = False

    def __enter__(self) -> int:
        if self.engine != "ray":
            return 1
        try:
            import ray
        except ImportError:
            raise SemidError("--engine ray needs Ray: pip install 'semid[ray]'") from None
        import logging

        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = self.progress
        ctx.print_on_execution_start = False
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.WARNING)
        if not ray.is_initialized():
            options: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "logging_level": logging.WARNING,
            }
            if self.address:
                options["address"] = self.address
            else:
                options["num_cpus"] = self.num_workers or os.cpu_count() or 1
            try:
                ray.init(**options)
            except Exception as e:  # noqa: BLE001 - connection errors come in many types
                raise SemidError(
                    f"cannot start or reach a Ray cluster ({self.address or 'local'}): {e}"
                ) from None
            self.started = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        return max(1, min(self.num_workers or cpus, cpus))

    def __exit__(self, *exc: object) -> None:
        if self.started:
            import ray

            ray.shutdown()


def unwrap_ray_error(e: BaseException) -> BaseException:
    """The SemidError a worker raised, out of Ray's wrappers; else one line naming what failed.

    Ray Data re-raises worker errors as ``UserCodeException``/``RayTaskError`` whose text holds the
    worker's traceback, so our error is found by its ``semid.errors.SemidError: ...`` line.
    """

    seen: set[int] = set()
    todo: list[BaseException | None] = [e]
    texts = []
    while todo:
        cur = todo.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, SemidError) and not type(cur).__module__.startswith("ray"):
            return SemidError(str(cur))
        texts.append(str(cur))
        todo.extend([cur.__context__, cur.__cause__, getattr(cur, "cause", None)])
    for text in texts:
        found = re.findall(r"semid\.errors\.SemidError: (.+)", text)
        if found:
            return SemidError(found[-1].strip())
    first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
    return SemidError(f"Ray job failed: {first[:500]}")

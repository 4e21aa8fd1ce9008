"""How often a finished 2-rank DDP job aborts at exit (SIGABRT), ending with `teardown` alone or `exit_rank`.

    python bench/exit_race.py --jobs 40            # both endings, 40 torchrun jobs each, gloo on CPU

Each job: torchrun, 2 ranks, one thread each, a small MLP under DistributedDataParallel, 30 steps with an
all_reduce each, a barrier; then the process ends through :func:`semid._distributed.teardown` at exit
(what a library caller gets) or through :func:`semid._distributed.exit_rank` (what `semid` does under
torchrun). The abort is a race (see `exit_rank`), so its rate grows with load: run it beside other work to
see it. Prints the aborted jobs per ending and the first abort's message.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

WORKER = """
import os
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from semid._distributed import exit_rank, setup

torch.set_num_threads(1)
setup("cpu")  # registers teardown at exit
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 40))
ddp = DistributedDataParallel(model)
opt = torch.optim.Adam(ddp.parameters())
for _ in range(30):
    ddp(torch.randn(16, 32)).sum().backward()
    opt.step()
    opt.zero_grad()
    dist.all_reduce(torch.ones(1))
dist.barrier()
if os.environ["ENDING"] == "exit_rank":
    exit_rank(0)
"""


def run_jobs(ending: str, jobs: int, script: Path) -> tuple[int, str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ENDING": ending, "PYTHONPATH": str(ROOT / "src")}
    aborted, first, start = 0, "", time.perf_counter()
    for _ in range(jobs):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-port", str(free_port()), str(script)]  # fmt: skip
        job = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if job.returncode:
            aborted += 1
            first = first or next((line for line in job.stderr.splitlines() if "terminate" in line), "?")
    return aborted, first, (time.perf_counter() - start) / jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--endings", default="teardown,exit_rank")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "worker.py"
        script.write_text(WORKER)
        print(f"{'ending':>10}  {'aborted':>9}  {'s/job':>6}  first abort")
        for ending in args.endings.split(","):
            aborted, first, per_job = run_jobs(ending, args.jobs, script)
            print(f"{ending:>10}  {aborted:>4} / {args.jobs:<3}  {per_job:6.1f}  {first}", flush=True)


if __name__ == "__main__":
    main()

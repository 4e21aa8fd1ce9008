"""Data-parallel training of the sequence models; the machinery lives in :mod:`semid._distributed`, shared
with the query LM and the RQ-VAE trainer, and is re-exported here where the rec modules and users find it."""

from semid._distributed import (  # noqa: F401  (re-exported)
    SINGLE,
    Dist,
    all_gather,
    all_sum,
    backend_for,
    barrier,
    current,
    exit_rank,
    launched_world_size,
    on_main,
    rank_device,
    setup,
    shard,
)

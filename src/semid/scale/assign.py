"""Semantic IDs for catalogues of any size: encode in a stream (or on Ray), deduplicate per code bucket.

Collisions only happen between items whose codes share a prefix, so the job runs in two passes:

1. **encode**: embedding batches -> base codes, each row tagged with the hash bucket of its code prefix and
   spilled to ``bucket=K/`` files (one process streaming record batches, or Ray Data ``map_batches`` with a
   quantizer loaded once per worker and ``write_parquet(partition_cols=["bucket"])``);
2. **finish**: each bucket alone -> dedup (or a registry transaction) -> ``part-K.parquet``. Buckets are
   independent, so they run as parallel Ray tasks; with a registry they are merged one transaction each.

The output is a directory of ``part-*.parquet`` files with the columns of ``ids.parquet`` (read it back
with :func:`semid.ids.table.read_ids`). Rows are grouped by bucket, not in input order; item for item the
result equals the in-memory ``semid assign``, because dedup orders each collision group by item id.
Everything is written beside the output and renamed into place at the end: a failed job leaves nothing.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from semid._outputs import Replaceable, atomic_path, check_output, has_marker
from semid._ray import check_engine  # noqa: F401  (re-exported)
from semid._ray import ray_session as _ray_session
from semid._ray import unwrap_ray_error as _unwrap_ray_error
from semid._utils import check_positive_int
from semid.errors import SemidError
from semid.scale.batches import PATH_COLUMN, EncodeBatch, matrix_from_column
from semid.scale.parts import Parts, check_unique_ids, list_parts

__all__ = ["AssignJobResult", "assign_dataset", "bucket_count"]

ROWS_PER_BUCKET = 1_000_000  # ids + codes of one bucket in memory at the finish step (~100 MB)
ROWS_PER_BUCKET_REMAP = 150_000  # remap also keeps the embeddings (150k x 384 floats = 230 MB)
MANIFEST = "_semid.json"
# for messages: "... holds files that are not a directory of IDs written by semid"
ASSIGN_DIR = "a directory of IDs"


def streamed_output(kind: str) -> Replaceable:
    """What a streamed ``semid embed`` or ``semid assign`` (``kind``) may replace: a directory that one of
    its earlier runs wrote, i.e. its manifest names that command and it holds nothing but Parquet part
    files and the manifest. Embeddings parts are never replaced by IDs (or the other way round), and a
    user's file beside the parts keeps the directory from being replaced at all."""

    def ours(directory: Path) -> bool:
        if not all(
            p.name == MANIFEST or (p.suffix == ".parquet" and p.is_file()) for p in directory.iterdir()
        ):
            return False
        manifest = json.loads((directory / MANIFEST).read_text())
        # manifests written before "kind": an assign's holds its job, an embed's its model
        return manifest.get("kind", "assign" if "job" in manifest else "embed") == kind

    return has_marker(MANIFEST, check=ours)


# One encoder actor per CPU would leave no CPU for the read and write tasks and Ray would wait forever:
# actors reserve a share of a CPU and I/O tasks a smaller one (the OS shares the cores in practice).
_ENCODER_CPUS = 0.5
_IO_CPUS = 0.25


@dataclass
class AssignJobResult:
    """What :func:`assign_dataset` did."""

    n_items: int
    n_buckets: int
    n_collided: int = 0
    n_moved: int = 0
    n_new: int | None = None  # with a registry
    n_existing: int | None = None
    registry_version: int | None = None
    engine: str = "local"
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.n_items / max(sum(self.seconds.values()), 1e-9)


def bucket_count(n_rows: int, dedup: str, at_least: int = 1) -> int:
    per = ROWS_PER_BUCKET_REMAP if dedup == "remap" else ROWS_PER_BUCKET
    return max(at_least, -(-n_rows // per))


def assign_dataset(
    model_dir: str | os.PathLike,
    embeddings: str | os.PathLike,
    output: str | os.PathLike,
    *,
    dedup: str = "suffix",
    fmt: str = "dash",
    registry: str | os.PathLike | None = None,
    new_version: bool = False,
    engine: str = "local",
    address: str | None = None,
    num_workers: int | None = None,
    n_buckets: int | None = None,
    batch_size: int = 65536,
    id_column: str = "item_id",
    embedding_column: str = "embedding",
    device: str = "cpu",
    progress: bool = True,
) -> AssignJobResult:
    """Encode a Parquet dataset (file or directory of parts) and write unique Semantic IDs as part files.

    Args:
        model_dir: a quantizer directory from ``semid fit``.
        embeddings: ``item_id`` + ``embedding`` Parquet (a file or a directory of part files).
        output: the directory of ``part-*.parquet`` to write (replaced atomically if it exists).
        dedup, fmt: as for ``semid assign``.
        registry: a SQLite registry: known items keep their IDs; one transaction per bucket.
        engine: ``"local"`` (stream in this process) or ``"ray"`` (Ray Data; a local cluster is started
            unless ``address`` names one, e.g. ``"auto"`` or ``"ray://head:10001"``).
        num_workers: encoder actors on Ray (default: the cluster's CPUs).
        n_buckets: dedup buckets (default: one per million rows, at least one per Ray worker).
    """
    from semid.ids.dedup import check_strategy
    from semid.ids.formats import _check_format
    from semid.ids.registry import open_registry
    from semid.quantize import load_quantizer

    check_strategy(dedup)
    _check_format(fmt)
    check_engine(engine, num_workers)
    batch_size = check_positive_int("batch_size", batch_size)
    output = Path(output)
    if output.suffix == ".parquet":
        raise SemidError(f"{output}: a streamed assign writes a directory of part files; drop '.parquet'")
    check_output(output, is_dir=True, replaceable=streamed_output("assign"), what=ASSIGN_DIR)
    model = load_quantizer(model_dir, device="cpu")
    if model.fusion_ is not None:
        raise SemidError(
            f"{model_dir} was fitted on {model.fusion_.describe()}; a streamed assign encodes the "
            "embeddings alone: assign it in memory "
            "(semid assign MODEL EMB --fuse ITEMS.parquet -o ids.parquet)"
        )
    parts = list_parts(embeddings, (id_column, embedding_column))
    result = AssignJobResult(n_items=parts.n_rows, n_buckets=0, engine=engine)
    t0 = time.perf_counter()
    check_unique_ids(parts, id_column)
    result.seconds["check_ids"] = time.perf_counter() - t0
    meta = {
        "format": fmt,
        "dedup": dedup,
        "model_type": model.model_type,
        "fingerprint": model.fingerprint_,
        "codebook_sizes": model.codebook_sizes_,
        "model_dir": str(model_dir),
    }
    keep = dedup == "remap"
    with (
        open_registry(registry, fingerprint=model.fingerprint_, new_version=new_version) as reg,
        atomic_path(output, is_dir=True, replaceable=streamed_output("assign"), what=ASSIGN_DIR) as tmp,
        _ray_session(engine, address, num_workers, progress) as workers,
    ):
        buckets = n_buckets or bucket_count(parts.n_rows, dedup, at_least=workers)
        result.n_buckets = buckets
        spill = tmp / "_spill"
        t0 = time.perf_counter()
        encoder_args = dict(
            model_dir=str(model_dir),
            n_buckets=buckets,
            id_column=id_column,
            embedding_column=embedding_column,
            keep_embeddings=keep,
            device=device,
        )
        if engine == "ray":
            _encode_ray(parts, spill, encoder_args, workers, batch_size)
        else:
            _encode_local(parts, spill, encoder_args, batch_size, progress)
        result.seconds["encode"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        jobs = [
            (sorted((spill / f"bucket={b}").iterdir()), tmp / f"part-{b:05d}.parquet", b)
            for b in range(buckets)
            if (spill / f"bucket={b}").is_dir()
        ]
        finish_args = dict(dedup=dedup, fmt=fmt, meta=meta, model_dir=str(model_dir) if keep else None)
        if reg is not None:
            stats = [
                finish_bucket(files, out, registry=reg, **finish_args)
                for files, out, _ in _bar(jobs, progress)
            ]
        elif engine == "ray":
            stats = _finish_ray(jobs, finish_args)
        else:
            stats = [finish_bucket(files, out, **finish_args) for files, out, _ in _bar(jobs, progress)]
        result.seconds["finish"] = time.perf_counter() - t0
        shutil.rmtree(spill)
        n_out = sum(s["n"] for s in stats)
        if n_out != parts.n_rows:  # every item exactly once, or nothing is written
            raise SemidError(f"internal error: {n_out:,} IDs written for {parts.n_rows:,} input rows")
        result.n_collided = sum(s["n_collided"] for s in stats)
        result.n_moved = sum(s["n_moved"] for s in stats)
        if registry is not None:
            result.n_new = sum(s["n_new"] for s in stats)
            result.n_existing = sum(s["n_existing"] for s in stats)
            result.registry_version = stats[0]["version"] if stats else None
        manifest = {"kind": "assign", "n_items": parts.n_rows, "input": str(embeddings), **meta}
        manifest["job"] = asdict(result)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    return result


# --- pass 1: encode ---------------------------------------------------------------------------------------


def _encode_local(
    parts: Parts, spill: Path, encoder_args: dict[str, Any], batch_size: int, progress: bool
) -> None:
    from tqdm.auto import tqdm

    from semid.embed.store import iter_embedding_batches

    encoder = EncodeBatch(**encoder_args)
    writers: dict[int, ipc.RecordBatchStreamWriter] = {}
    try:
        with tqdm(
            total=parts.n_rows, unit="rows", unit_scale=True, desc="encode", disable=not progress
        ) as bar:
            for ids, X in iter_embedding_batches(
                parts.root,
                batch_size,
                id_column=encoder_args["id_column"],
                embedding_column=encoder_args["embedding_column"],
                check_unique=False,
            ):
                if X.shape[1] != encoder.dim:
                    raise SemidError(
                        f"{parts.root.name}: {X.shape[1]} values per embedding, but the model expects {encoder.dim}"
                    )
                table = encoder.encode_arrays(ids, X)
                for b, piece in _split_by_bucket(table):
                    if b not in writers:
                        (spill / f"bucket={b}").mkdir(parents=True, exist_ok=True)
                        schema = piece.schema
                        writers[b] = ipc.new_stream(str(spill / f"bucket={b}" / "part-0.arrow"), schema)
                    writers[b].write_table(piece)
                bar.update(len(ids))
    finally:
        for w in writers.values():
            w.close()


def _split_by_bucket(table: pa.Table) -> Iterator[tuple[int, pa.Table]]:
    bucket = table.column("bucket").to_numpy()
    order = np.argsort(bucket, kind="stable")
    uniq, starts = np.unique(bucket[order], return_index=True)
    ends = np.r_[starts[1:], len(order)]
    rest = table.drop_columns(["bucket"])
    for b, s, e in zip(uniq.tolist(), starts.tolist(), ends.tolist(), strict=True):
        yield b, rest.take(pa.array(order[s:e]))


def _encode_ray(
    parts: Parts, spill: Path, encoder_args: dict[str, Any], workers: int, batch_size: int
) -> None:
    columns = [encoder_args["id_column"], encoder_args["embedding_column"], PATH_COLUMN]
    ray_map_parts(parts, EncodeBatch, encoder_args, spill, workers, batch_size, columns, ["bucket"])


def ray_map_parts(
    parts: Parts,
    fn: type,
    fn_kwargs: dict[str, Any],
    out: Path,
    workers: int,
    batch_size: int,
    columns: list[str] | None = None,
    partition_cols: list[str] | None = None,
) -> None:
    """Ray Data: read ``parts`` (with a ``path`` column) -> ``map_batches(fn)`` on ``workers`` actors that
    build ``fn(**fn_kwargs)`` once each -> ``write_parquet(out)``. Worker errors come back as one line."""
    import pyarrow.fs
    import ray.data

    local = pyarrow.fs.LocalFileSystem()
    try:
        ds = ray.data.read_parquet(
            [str(f.resolve()) for f in parts.files],
            include_paths=True,
            filesystem=local,
            num_cpus=_IO_CPUS,
            override_num_blocks=ray_blocks(parts, workers),
        )
        if columns is not None:
            ds = ds.select_columns(columns)
        ds = ds.map_batches(
            fn,
            fn_constructor_kwargs=fn_kwargs,
            batch_format="pyarrow",
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=_ENCODER_CPUS,
        )
        ds.write_parquet(
            str(out.resolve()),
            partition_cols=partition_cols,
            filesystem=local,
            ray_remote_args={"num_cpus": _IO_CPUS},
        )
    except Exception as e:  # noqa: BLE001 - Ray wraps worker errors; surface ours as one line
        raise _unwrap_ray_error(e) from None


def ray_blocks(parts: Parts, workers: int) -> int:
    """Read blocks: about 64 MB of Parquet each, and enough that every worker gets several."""
    size = sum(f.stat().st_size for f in parts.files)
    return max(len(parts.files), 4 * workers, -(-size // (64 << 20)))


# --- pass 2: finish ---------------------------------------------------------------------------------------


def _read_bucket(files: list[Path]) -> pa.Table:
    tables = []
    for f in files:
        if f.suffix == ".arrow":
            with ipc.open_stream(str(f)) as reader:
                tables.append(reader.read_all())
        elif f.suffix == ".parquet":
            tables.append(pq.read_table(f))
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    return table.combine_chunks()


def _bucket_arrays(files: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(item_ids, base_codes, embeddings or None)`` of one bucket; rows a retried task wrote twice are
    dropped (the input was checked for duplicate ids, so a repeat can only be the same row again)."""
    import pyarrow.compute as pc

    table = _read_bucket(files)
    ids = table.column("item_id")
    if pc.count_distinct(ids, mode="all").as_py() != table.num_rows:
        codes = pc.dictionary_encode(ids.combine_chunks()).indices.to_numpy(zero_copy_only=False)
        _, first = np.unique(codes, return_index=True)
        table = table.take(pa.array(np.sort(first)))
        ids = table.column("item_id")
    col = table.column("base_codes").combine_chunks()
    width = col.type.list_size if pa.types.is_fixed_size_list(col.type) else len(col[0].as_py())
    base = matrix_from_column(col, width, np.int64)
    X = None
    if "embedding" in table.column_names:
        emb = table.column("embedding").combine_chunks()
        X = matrix_from_column(emb, emb.type.list_size, np.float32)
    return ids.to_numpy(zero_copy_only=False), base, X


def finish_bucket(
    files: list[Path],
    out: Path,
    *,
    dedup: str,
    fmt: str,
    meta: dict[str, Any],
    model_dir: str | None = None,
    registry: Any = None,
) -> dict[str, Any]:
    """Deduplicate one bucket (or assign it through ``registry``) and write ``out`` atomically."""
    from semid.ids import deduplicate, format_ids
    from semid.ids.table import IdTable, write_ids

    ids, base, X = _bucket_arrays(files)
    rank = None
    if dedup == "remap":
        model = _cpu_quantizer(model_dir, _mtimes(model_dir))
        rank = lambda rows: model.rank_last_level(X[rows])  # noqa: E731
    stats: dict[str, Any] = {"n": len(ids), "n_collided": 0, "n_moved": 0}
    if registry is not None:
        res = registry.assign(ids, base, dedup=dedup, rank_last_level=rank)
        codes = res.codes
        stats.update(n_moved=res.n_moved, n_new=res.n_new, n_existing=res.n_existing, version=res.version)
    else:
        d = deduplicate(base, dedup, item_ids=ids, rank_last_level=rank)
        codes = d.codes
        stats.update(n_collided=d.n_collided, n_moved=d.n_moved)
    write_ids(out, IdTable(ids, format_ids(codes, fmt), codes, base, meta))
    return stats


@functools.lru_cache(maxsize=2)
def _cpu_quantizer(model_dir: str, mtimes: tuple[int, ...]) -> Any:
    """The quantizer ``remap`` ranks codes with, loaded once per process rather than once per bucket
    (``mtimes`` is part of the key, so a model saved again into the same directory is read again)."""
    from semid.quantize import load_quantizer

    return load_quantizer(model_dir, device="cpu")


def _mtimes(model_dir: str) -> tuple[int, ...]:
    return tuple(p.stat().st_mtime_ns for p in sorted(Path(model_dir).iterdir()) if p.is_file())


def _finish_ray(jobs: list, args: dict) -> list[dict[str, Any]]:
    import ray

    task = ray.remote(num_cpus=1, max_retries=3)(finish_bucket)
    try:
        return ray.get([task.remote(files, out, **args) for files, out, _ in jobs])
    except Exception as e:  # noqa: BLE001
        raise _unwrap_ray_error(e) from None


def _bar(jobs: list, progress: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(jobs, desc="dedup", unit="bucket", disable=not progress or len(jobs) < 2)


# --- Ray plumbing -----------------------------------------------------------------------------------------

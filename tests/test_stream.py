"""Streamed interaction logs (semid.rec.stream): the in-memory path's examples, in bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from semid.data import Sequences, leave_one_out
from semid.errors import SemidError
from semid.rec.data import PAD, Examples, history_examples, prefix_examples, user_keys, window_examples
from semid.rec.stream import StreamedLog, write_user_shards

MAKE = {"windows": window_examples, "prefixes": prefix_examples}


# --------------------------------------------------------------------------------------------------------
# A small log and its in-memory reference
# --------------------------------------------------------------------------------------------------------


def random_log(n_users: int = 240, n_items: int = 60, seed: int = 0, min_len: int = 3, max_len: int = 30):
    """(user ids, item ids, timestamps, catalogue) in random row order, with timestamp ties."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, max_len, n_users)
    users = np.repeat(np.array([f"user-{u}" for u in range(n_users)], dtype=object), lengths)
    catalogue = np.array([f"item-{i}" for i in range(n_items)], dtype=object)
    items = catalogue[rng.integers(0, n_items, len(users))]
    times = rng.integers(0, 50, len(users))  # few distinct times: many ties
    shuffle = rng.permutation(len(users))
    return users[shuffle], items[shuffle], times[shuffle], catalogue


def in_memory(users, items, times, catalogue):
    """(user keys, Sequences) as the in-memory path sees the log: rows by user, then time (stable)."""
    order = np.lexsort((times, users.astype(str)))  # stable: equal times keep their row order
    ids, first = np.unique(users[order].astype(str), return_index=True)
    index = {item: i for i, item in enumerate(catalogue)}
    seq_items = np.array([index[x] for x in items[order]], dtype=np.int64)
    return user_keys(ids), Sequences(np.append(first, len(order)).astype(np.int64), seq_items)


def triples(ex: Examples) -> Counter:
    """The multiset of (user, history, target) of some examples."""
    return Counter(
        (int(u), tuple(ex.items[s:e].tolist()), int(t))
        for s, e, t, u in zip(ex.start, ex.end, ex.target, ex.user, strict=True)
    )


def batch_triples(batches) -> Counter:
    out: Counter = Counter()
    for b in batches:
        for row, t, u in zip(b.history.tolist(), b.target.tolist(), b.user.tolist(), strict=True):
            out[(u, tuple(x for x in row if x != PAD), t)] += 1
    return out


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    """A 6-shard log (row groups of 50 rows, record batches of 37) and its in-memory reference."""
    users, items, times, catalogue = random_log()
    root = tmp_path_factory.mktemp("stream") / "log"
    write_user_shards(users, items, times, root, n_shards=6, row_group_size=50)
    keys, seqs = in_memory(users, items, times, catalogue)
    return StreamedLog.open(root, catalogue, batch_rows=37), keys, seqs


# --------------------------------------------------------------------------------------------------------
# Same examples as in memory
# --------------------------------------------------------------------------------------------------------


def test_write_user_shards_layout(log):
    streamed, keys, seqs = log
    assert [p.name for p in streamed.paths] == [f"part-{s:05d}.parquet" for s in range(6)]
    assert streamed.n_rows == len(seqs.items)
    for p in streamed.paths:
        t = pq.read_table(p)
        assert t.column_names == ["user_id", "item_id", "timestamp"]
        assert pq.read_metadata(p).num_row_groups == -(-t.num_rows // 50)
        users = t["user_id"].to_pylist()
        assert users == sorted(users)  # together and in order
        assert {int(k) % 6 for k in user_keys(users)} <= {int(p.stem[-5:])}  # hashed to this shard


def test_iter_users_gives_each_sequence_once(log):
    streamed, keys, seqs = log
    got = Counter((k, tuple(items.tolist())) for k, items in streamed.iter_users())
    want = Counter((int(k), tuple(seqs.row(u).tolist())) for u, k in enumerate(keys))
    assert got == want
    # Without a time column the rows' order is the time order (here the same, as the shards are sorted).
    untimed = StreamedLog.open(streamed.paths[0].parent, _catalogue_of(streamed), time_column=None)
    assert Counter((k, tuple(items.tolist())) for k, items in untimed.iter_users()) == want


@pytest.mark.parametrize("kind", ["windows", "prefixes"])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_one_epoch_over_all_ranks_is_the_in_memory_examples(log, kind, world_size):
    streamed, keys, seqs = log
    want = triples(MAKE[kind](leave_one_out(seqs).train, keys, 5))
    got: Counter = Counter()
    for rank in range(world_size):
        batches = list(
            streamed.train_batches(
                kind, 5, 16, seed=3, epoch=0, rank=rank, world_size=world_size, buffer_examples=100
            )
        )
        assert len(batches) == streamed.count_batches(
            kind, 5, 16, rank=rank, world_size=world_size, buffer_examples=100
        )
        assert all(1 <= len(b) <= 16 for b in batches)
        got += batch_triples(batches)
    assert got == want
    assert streamed.count_train_examples(kind, 5) == sum(want.values())


def test_batches_group_lengths_within_a_buffer(log):
    streamed, _, _ = log
    pads = [
        (b.history == PAD).float().mean().item()
        for b in streamed.train_batches("prefixes", 8, 32, seed=0, epoch=0)
    ]
    assert np.mean(pads) < 0.05  # length-grouped: almost no padding


@pytest.mark.parametrize("split", ["valid", "test"])
def test_eval_examples_are_the_held_out_targets(log, split):
    streamed, keys, seqs = log
    s = leave_one_out(seqs)
    if split == "valid":
        want = history_examples(s.train, s.valid_target, keys, 7)
    else:
        want = history_examples(s.test_history, s.test_target, keys, 7)
    got = streamed.eval_examples(split, 7)
    assert len(got) == len(keys)
    assert triples(got) == triples(want)
    assert len(got.items) == got.lengths.sum()  # compact: only the histories are held


def test_eval_examples_sample_is_seeded_and_uniform_subset(log):
    streamed, keys, _ = log
    full = triples(streamed.eval_examples("valid", 7))
    a = streamed.eval_examples("valid", 7, max_users=50, seed=1)
    assert len(a) == 50 and len(set(a.user.tolist())) == 50
    assert not triples(a) - full  # a subset of every user's examples
    assert triples(streamed.eval_examples("valid", 7, max_users=50, seed=1)) == triples(a)
    assert triples(streamed.eval_examples("valid", 7, max_users=50, seed=2)) != triples(a)
    assert len(streamed.eval_examples("valid", 7, max_users=10_000)) == len(keys)
    # Uniform: over seeds every user is picked about 50/240 of the time.
    picks = Counter(
        u
        for seed in range(40)
        for u in streamed.eval_examples("test", 3, max_users=50, seed=seed).user.tolist()
    )
    assert len(picks) > 0.9 * len(keys) and max(picks.values()) < 25


def test_int_ids_and_drop_short_users(tmp_path):
    rng = np.random.default_rng(5)
    lengths = rng.integers(1, 9, 80)  # some users with 1 or 2 items
    users = np.repeat(np.arange(80) * 7, lengths)
    items = rng.integers(0, 20, len(users))
    times = np.arange(len(users))
    write_user_shards(users, items, times, tmp_path / "log", n_shards=3)
    catalogue = np.array([str(i) for i in range(20)], dtype=object)  # text ids match integer ids
    with pytest.raises(SemidError, match=r"user \d+ has [12] interactions; leave-one-out needs at least 3"):
        StreamedLog.open(tmp_path / "log", catalogue).count_train_examples("prefixes", 4)
    streamed = StreamedLog.open(tmp_path / "log", catalogue, drop_short_users=True)
    long = np.repeat(lengths >= 3, lengths)
    keys, seqs = in_memory(users[long], items[long].astype(str), times[long], catalogue)
    want = triples(prefix_examples(leave_one_out(seqs).train, keys, 4))
    assert batch_triples(streamed.train_batches("prefixes", 4, 8, seed=0, epoch=0)) == want
    assert streamed.count_train_examples("prefixes", 4) == sum(want.values())


# --------------------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------------------


def _epoch(streamed, **kw) -> list:
    args = dict(seed=0, epoch=0, rank=1, world_size=2, buffer_examples=200) | kw
    return list(streamed.train_batches("prefixes", 6, 16, **args))


def _same(a: list, b: list) -> bool:
    """Equal batches in equal order."""
    fields = ("history", "target", "user")
    return len(a) == len(b) and all(
        torch.equal(getattr(x, f), getattr(y, f)) for x, y in zip(a, b, strict=True) for f in fields
    )


def test_same_seed_and_epoch_same_batches_another_epoch_another_order(log):
    streamed, _, _ = log
    first = _epoch(streamed)
    assert _same(first, _epoch(streamed))
    assert not _same(first, _epoch(streamed, epoch=1))
    assert not _same(first, _epoch(streamed, seed=1))
    assert batch_triples(first) == batch_triples(_epoch(streamed, epoch=1))  # same examples, new order
    # The order does not depend on how rows are read (record batch size).
    reread = StreamedLog.open(streamed.paths[0].parent, _catalogue_of(streamed), batch_rows=1000)
    assert _same(first, _epoch(reread))
    # Resuming mid-epoch: skip_batches leaves out exactly the first batches.
    assert _same(first[5:], _epoch(streamed, skip_batches=5))


def _catalogue_of(streamed) -> np.ndarray:
    return np.array([f"item-{i}" for i in range(streamed.n_items)], dtype=object)


# --------------------------------------------------------------------------------------------------------
# Bounded memory
# --------------------------------------------------------------------------------------------------------

N_ITEMS = 50_000
# Record batches and shuffle buffer of 16,384: a log of 100,000 rows already reaches the steady state.
CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    from semid.rec.stream import StreamedLog
    log = StreamedLog.open(sys.argv[1], np.arange({n_items}), batch_rows=16_384)
    n = b = 0
    for batch in log.train_batches("prefixes", 50, 256, seed=0, epoch=0, buffer_examples=16_384):
        n += len(batch); b += 1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    counted = log.count_batches("prefixes", 50, 256, buffer_examples=16_384)
    print(json.dumps({{"examples": n, "batches": b, "counted": counted, "rss_mib": rss}}))
    """
).format(n_items=N_ITEMS)


def write_numpy_log(root: Path, n_interactions: int, n_shards: int = 8, seed: int = 0) -> int:
    """A log of integer users and items written shard by shard straight from numpy (already sorted).

    Returns the number of prefix training examples it holds (each user of n items has n - 3).
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    examples = 0
    per_shard = n_interactions // n_shards
    for s in range(n_shards):
        lengths = rng.integers(3, 60, per_shard // 30 + 1)
        lengths = lengths[np.cumsum(lengths) <= per_shard]
        users = np.repeat(s + n_shards * np.arange(len(lengths)), lengths)  # sorted within the shard
        table = pa.table(
            {
                "user_id": users,
                "item_id": rng.integers(0, N_ITEMS, len(users)),
                "timestamp": np.arange(len(users)),
            }
        )
        pq.write_table(table, root / f"part-{s:05d}.parquet", row_group_size=65_536)
        examples += int((lengths - 3).sum())
    return examples


def test_memory_is_flat_in_the_size_of_the_log(tmp_path):
    peaks = {}
    for n in (100_000, 1_000_000):
        want = write_numpy_log(tmp_path / str(n), n)
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(tmp_path / str(n))],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        got = json.loads(out.stdout.strip().splitlines()[-1])
        assert got["examples"] == want  # every example of the epoch was collated
        assert got["batches"] == got["counted"]
        peaks[n] = got["rss_mib"]
    # 10x the log, (almost) the same peak: measured +0 to +8 MiB, where a loader that holds the epoch's
    # examples (buffer_examples=10**9) grows by ~75 MiB from the small log to the large one.
    assert peaks[1_000_000] < peaks[100_000] + 30, peaks


# --------------------------------------------------------------------------------------------------------
# Bad input: one clear line, naming the file
# --------------------------------------------------------------------------------------------------------


def _write(path: Path, users, items, times=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    times = np.arange(len(users)) if times is None else times
    pq.write_table(pa.table({"user_id": users, "item_id": items, "timestamp": times}), path)


def test_corrupt_footer_is_named_before_any_batch(tmp_path):
    users, items, times, catalogue = random_log(n_users=30)
    write_user_shards(users, items, times, tmp_path / "log", n_shards=3)
    bad = tmp_path / "log" / "part-00001.parquet"
    bad.write_bytes(bad.read_bytes()[:-20])  # cut the footer
    with pytest.raises(SemidError, match=r"^part-00001\.parquet: not a readable Parquet file") as e:
        StreamedLog.open(tmp_path / "log", catalogue)
    assert "\n" not in str(e.value)


def test_missing_column_and_no_shards_are_named(tmp_path):
    pq.write_table(
        pa.table({"user_id": ["a"], "item": ["x"], "timestamp": [1]}), tmp_path / "part-00000.parquet"
    )
    with pytest.raises(
        SemidError, match=r"part-00000\.parquet: no column 'item_id' \(columns: user_id, item, timestamp\)"
    ):
        StreamedLog.open(tmp_path, ["x"])
    with pytest.raises(SemidError, match=r"no column 'ts'"):
        StreamedLog.open(tmp_path, ["x"], item_column="item", time_column="ts")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SemidError, match=r"empty: no \.parquet files"):
        StreamedLog.open(tmp_path / "empty", ["x"])


@pytest.mark.parametrize("batch_rows", [2, 100])  # the user comes back in the same / a later record batch
def test_a_user_split_in_a_shard_is_named(tmp_path, batch_rows):
    _write(tmp_path / "part-00000.parquet", ["a", "a", "a", "b", "b", "b", "a"], ["x"] * 7)
    log = StreamedLog.open(tmp_path, ["x"], batch_rows=batch_rows)
    with pytest.raises(
        SemidError, match=r"^part-00000\.parquet row 6: user 'a' comes after user 'b'; a shard must hold"
    ):
        list(log.train_batches("windows", 4, 2, seed=0, epoch=0))
    with pytest.raises(SemidError, match=r"user 'a' comes after user 'b'"):
        log.count_train_examples("windows", 4)


def test_time_going_back_is_named(tmp_path):
    _write(tmp_path / "part-00000.parquet", ["a"] * 4 + ["b"] * 3, ["x"] * 7, [1, 2, 5, 3, 0, 1, 2])
    log = StreamedLog.open(tmp_path, ["x"])
    with pytest.raises(
        SemidError, match=r"part-00000\.parquet row 3: timestamp of user 'a' goes back in time"
    ):
        list(log.iter_users())


def test_unknown_item_ids_are_named_when_met(tmp_path):
    _write(tmp_path / "part-00000.parquet", ["a"] * 5, ["x", "y", "nope", "x", "gone"])
    log = StreamedLog.open(tmp_path, ["x", "y"])  # opening reads no rows
    batches = log.train_batches("prefixes", 4, 2, seed=0, epoch=0)
    with pytest.raises(
        SemidError,
        match=r"^part-00000\.parquet row 2: item 'nope' is not in the catalogue of 2 items "
        r"\(2 unknown .* e\.g\. 'nope', 'gone'\)",
    ) as e:
        next(batches)
    assert "\n" not in str(e.value)


def test_fewer_shards_than_ranks_is_one_error(log):
    streamed, _, _ = log
    with pytest.raises(
        SemidError,
        match=r"^the log has 6 shards for 8 ranks; every rank needs one: write it with n_shards >= 8",
    ):
        streamed.train_batches("windows", 4, 8, seed=0, epoch=0, rank=0, world_size=8)
    with pytest.raises(SemidError, match=r"rank=2 should be an integer in \[0, world_size=2\)"):
        streamed.shards(2, 2)


def test_bad_arguments_and_catalogue(tmp_path, log):
    streamed, _, _ = log
    with pytest.raises(SemidError, match=r"kind='items' is not one of 'windows', 'prefixes'"):
        streamed.train_batches("items", 4, 8, seed=0, epoch=0)
    with pytest.raises(SemidError, match=r"batch_size=0 should be an integer >= 1"):
        streamed.train_batches("windows", 4, 0, seed=0, epoch=0)
    with pytest.raises(SemidError, match=r"split='train' is not one of"):
        streamed.eval_examples("train")
    _write(tmp_path / "log" / "part-00000.parquet", ["a"] * 3, ["x"] * 3)
    with pytest.raises(SemidError, match=r"item_ids\[0\] 'x' and item_ids\[2\] 'x' are the same id"):
        StreamedLog.open(tmp_path / "log", ["x", "y", "x"])


def test_write_user_shards_replaces_only_its_own_output(tmp_path):
    users, items, times, _ = random_log(n_users=20)
    out = tmp_path / "log"
    write_user_shards(users, items, times, out, n_shards=2)
    write_user_shards(users, items, times, out, n_shards=3)  # a log is replaced as a whole
    assert sorted(p.name for p in out.iterdir()) == [f"part-{s:05d}.parquet" for s in range(3)]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(
        SemidError, match=r"holds files that are not a sharded interaction log written by semid"
    ):
        write_user_shards(users, items, times, tmp_path / "mine", n_shards=2)
    with pytest.raises(SemidError, match=r"differ in length: 3, 2, 3"):
        write_user_shards(["a", "b", "c"], ["x", "y"], [1, 2, 3], tmp_path / "x", n_shards=1)

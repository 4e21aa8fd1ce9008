"""Writing outputs: nothing lost, readable by others, no leftovers (semid._outputs and its writers)."""

import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from conftest import clustered, dead_pid
from semid._outputs import (
    _HOST,
    atomic_path,
    check_output,
    has_marker,
    remove_dead_leftovers,
)
from semid.errors import SemidError


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def fitted():
    from semid.quantize import RQKMeans

    return RQKMeans(n_levels=2, codebook_size=4, random_state=0).fit(clustered(n=100, dim=8))


# -- modes ---------------------------------------------------------------------------------------------


def test_an_atomic_file_gets_0644_under_umask_022_not_mkstemps_0600(tmp_path, umask_022):
    with atomic_path(tmp_path / "ids.parquet") as tmp:
        tmp.write_text("x")
    assert mode(tmp_path / "ids.parquet") == 0o644


def test_an_atomic_directory_and_everything_in_it_get_0755_and_0644(tmp_path, umask_022):
    with atomic_path(tmp_path / "out", is_dir=True) as tmp:
        (tmp / "sub").mkdir(mode=0o700)
        (tmp / "sub" / "a").write_text("a")
        os.chmod(tmp / "sub" / "a", 0o600)  # as safetensors and mkstemp leave their files
        (tmp / "run.sh").write_text("#!/bin/sh\n")
        os.chmod(tmp / "run.sh", 0o700)
    assert mode(tmp_path / "out") == 0o755
    assert mode(tmp_path / "out" / "sub") == 0o755
    assert mode(tmp_path / "out" / "sub" / "a") == 0o644
    assert mode(tmp_path / "out" / "run.sh") == 0o755  # an executable stays executable


def test_modes_follow_a_stricter_umask(tmp_path):
    old = os.umask(0o077)
    try:
        with atomic_path(tmp_path / "private.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert mode(tmp_path / "private.json") == 0o600


def test_a_replaced_file_keeps_its_own_mode(tmp_path, umask_022):
    path = tmp_path / "report.html"
    path.write_text("old")
    os.chmod(path, 0o640)
    with atomic_path(path) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new" and mode(path) == 0o640


def test_a_saved_quantizer_is_readable_by_other_users(tmp_path, umask_022):
    fitted().save_pretrained(tmp_path / "model")
    assert mode(tmp_path / "model") == 0o755
    assert {p.name: mode(p) for p in (tmp_path / "model").iterdir()} == {
        "config.json": 0o644,
        "model.safetensors": 0o644,
    }


# -- what may be replaced ------------------------------------------------------------------------------


def test_save_pretrained_refuses_a_directory_with_other_files_and_keeps_them(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    with pytest.raises(SemidError) as e:
        fitted().save_pretrained(d)
    assert str(e.value) == (
        f"{d} holds files that are not a quantizer directory written by semid (notes.txt); "
        "choose a new directory (nothing was changed)"
    )
    assert [p.name for p in d.iterdir()] == ["notes.txt"] and (d / "notes.txt").read_text() == "mine"


def test_save_pretrained_replaces_an_empty_directory_and_an_earlier_model(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    model = fitted()
    model.save_pretrained(d)
    model.save_pretrained(d)  # a model over a model: replaced
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]


def test_save_pretrained_refuses_a_regular_file_and_leaves_nothing_beside_it(tmp_path):
    f = tmp_path / "model"
    f.write_text("a file")
    with pytest.raises(SemidError, match="model is a file; the output is a quantizer directory"):
        fitted().save_pretrained(f)
    assert f.read_text() == "a file" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_file_output_that_is_a_directory_is_refused(tmp_path):
    (tmp_path / "x.parquet").mkdir()
    with pytest.raises(SemidError, match=r"x\.parquet is a directory; the output is a file"):
        check_output(tmp_path / "x.parquet")


def test_an_output_that_is_an_input_or_holds_one_is_refused(tmp_path):
    (tmp_path / "e.parquet").write_text("data")
    with pytest.raises(SemidError, match="the output is also an input of this command"):
        check_output(tmp_path / "e.parquet", inputs=[None, tmp_path / "e.parquet"])
    with pytest.raises(SemidError, match="would replace a directory that holds the input"):
        check_output(tmp_path, is_dir=True, inputs=[tmp_path / "e.parquet"], replaceable=lambda _: True)
    # the same file spelled another way is still the same file
    os.symlink(tmp_path / "e.parquet", tmp_path / "link.parquet")
    with pytest.raises(SemidError, match="the output is also an input"):
        check_output(tmp_path / "link.parquet", inputs=[tmp_path / "e.parquet"])


def test_an_output_may_not_replace_a_file_of_an_input_run_or_model_but_may_sit_beside_its_files(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(
        "{}"
    )  # one artifact (a run, a quantizer, a model): its files are its parts
    (run / "sequences.parquet").write_text("the run's data")
    with pytest.raises(SemidError) as e:
        check_output(run / "sequences.parquet", inputs=[run])
    assert str(e.value) == (
        f"{run / 'sequences.parquet'}: the output would replace sequences.parquet inside the input directory "
        f"{run}; write to another path"
    )
    assert (run / "sequences.parquet").read_text() == "the run's data"
    assert (
        check_output(run / "vectors.parquet", inputs=[run]) == run / "vectors.parquet"
    )  # a new file: allowed
    # a link inside the run is replaced itself (atomic_path), so it counts as the run's file wherever it points
    os.symlink(tmp_path / "elsewhere.parquet", run / "link.parquet")
    with pytest.raises(SemidError, match="would replace link.parquet inside the input directory"):
        check_output(run / "link.parquet", inputs=[run])
    # ... and a link outside pointing into the run is replaced without touching the run's file
    os.symlink(run / "sequences.parquet", tmp_path / "out.parquet")
    assert check_output(tmp_path / "out.parquet", inputs=[run]) == tmp_path / "out.parquet"


def test_a_plain_input_folder_lets_a_command_replace_its_own_earlier_output_inside_it(tmp_path):
    """`semid embed . -o emb.parquet` twice: the catalogue folder is no artifact, so the re-run works."""
    shop = tmp_path / "shop"
    shop.mkdir()
    (shop / "items.csv").write_text("item_id,title\n")
    (shop / "emb.parquet").write_text("last run's output")
    assert check_output(shop / "emb.parquet", inputs=[shop]) == shop / "emb.parquet"
    (shop / "llm").mkdir()  # a directory output inside an input folder follows the directory rules
    (shop / "llm" / "x").write_text("")
    assert check_output(shop / "llm", is_dir=True, inputs=[shop], replaceable=lambda _: True) == shop / "llm"


def test_an_output_under_a_regular_file_is_refused(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SemidError) as e:
        check_output(tmp_path / "afile" / "sub" / "ids.parquet")
    assert (
        str(e.value)
        == f"{tmp_path / 'afile' / 'sub' / 'ids.parquet'}: {tmp_path / 'afile'} is a file, not a directory"
    )


def test_an_output_in_a_folder_without_write_permission_is_refused_before_any_work(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if str(p) == str(ro) else real_access(p, m))
    with pytest.raises(SemidError) as e:
        check_output(ro / "new" / "model", is_dir=True)
    assert str(e.value) == f"{ro / 'new' / 'model'}: cannot write in {ro} (permission denied)"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only folders")
def test_a_real_read_only_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    with pytest.raises(SemidError, match="permission denied"):
        fitted().save_pretrained(ro / "model")


def test_a_directory_is_replaceable_only_when_it_holds_the_writers_marker(tmp_path):
    check = has_marker("semid_llm.json")
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "weights").write_text("w")
    assert not check(tmp_path / "lm") and not check(tmp_path / "missing")
    (tmp_path / "lm" / "semid_llm.json").write_text("{}")
    assert check(tmp_path / "lm")
    with atomic_path(tmp_path / "lm", is_dir=True, replaceable=check) as tmp:
        (tmp / "semid_llm.json").write_text("{}")
    assert [p.name for p in (tmp_path / "lm").iterdir()] == ["semid_llm.json"]


# -- leftovers of killed jobs ---------------------------------------------------------------------------


def test_the_next_write_removes_temporaries_of_a_killed_job_and_keeps_live_ones(tmp_path):
    dead = tmp_path / f".ids.{_HOST}.{dead_pid()}.abc123.tmp"
    dead.mkdir()
    (dead / "part-00000.parquet").write_text("half")
    live = tmp_path / f".ids.{_HOST}.{os.getppid()}.def456.tmp"  # our parent process is alive
    live.mkdir()
    other_host = tmp_path / f".ids.elsewhere.{dead_pid()}.ghi789.tmp"  # a shared disk: not ours to judge
    other_host.mkdir()
    other_output = tmp_path / f".emb.{_HOST}.{dead_pid()}.jkl012.tmp"
    other_output.write_text("another output's leftover")
    with atomic_path(tmp_path / "ids", is_dir=True) as tmp:
        (tmp / "part-00000.parquet").write_text("done")
    assert not dead.exists()
    assert live.exists() and other_host.exists() and other_output.exists()
    assert remove_dead_leftovers(tmp_path / "emb") == [other_output]


def test_a_sigkilled_write_leaves_a_temporary_that_the_next_run_removes(tmp_path):
    code = (
        "import os, signal, sys\n"
        "from semid._outputs import atomic_path\n"
        "with atomic_path(sys.argv[1], is_dir=True) as tmp:\n"
        "    (tmp / 'part').write_text('half')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")])
    assert proc.returncode == -9
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".out.") and left[0].endswith(".tmp")
    with atomic_path(tmp_path / "out", is_dir=True) as tmp:
        (tmp / "part").write_text("whole")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (tmp_path / "out" / "part").read_text() == "whole"


def test_a_failed_write_leaves_the_old_output_and_no_temporary(tmp_path):
    path = tmp_path / "ids.parquet"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["ids.parquet"]


def test_saved_ids_are_identical_whatever_the_modes(tmp_path, umask_022):
    from semid.quantize import load_quantizer

    model = fitted()
    model.save_pretrained(tmp_path / "m")
    X = clustered(n=100, dim=8)
    np.testing.assert_array_equal(load_quantizer(tmp_path / "m", device="cpu").encode(X), model.encode(X))

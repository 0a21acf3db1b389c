"""tinv_cli.atomic: the old file or the new one, never half of either, and nothing left behind on failure."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tinv_cli import atomic

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits and folder fsync")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_writes_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "file.txt"
    assert atomic.write_text(path, "first\n") == path
    atomic.write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert [p.name for p in path.parent.iterdir()] == ["file.txt"]


def test_a_failing_writer_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "kept.bin"
    path.write_bytes(b"old")
    seen: list[Path] = []

    def half_then_fail(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_bytes(b"ha")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic.write_with(path, half_then_fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["kept.bin"]
    # The temporary name is recognisable: hidden, beside the target, ending in .tmp.
    (tmp,) = seen
    assert tmp.parent == tmp_path and tmp.name.startswith(".kept.bin.") and tmp.name.endswith(".tmp")


def test_leftovers_finds_what_a_dead_writer_left(tmp_path: Path) -> None:
    path = tmp_path / "meta.json"
    dead = atomic.temp_path(path)
    dead.write_text("{")
    (tmp_path / ".other.json.1.abc.tmp").write_text("{")
    assert atomic.leftovers(path) == [dead]


def test_unserialisable_json_touches_nothing(tmp_path: Path) -> None:
    path = tmp_path / "info.json"
    atomic.write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        atomic.write_json(path, {"a": object()})
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["info.json"]
    atomic.write_json(path, {"path": Path("x"), "word": "Käfer"}, default=str)
    assert path.read_text(encoding="utf-8") == '{\n  "path": "x",\n  "word": "Käfer"\n}\n'


@posix_only
def test_the_result_has_the_usual_permissions_not_mkstemps(tmp_path: Path) -> None:
    path = atomic.write_bytes(tmp_path / "new.txt", b"x")
    assert _mode(path) == 0o666 & ~_umask()
    os.chmod(path, 0o600)
    atomic.write_bytes(path, b"y")  # a replacement is a new file: the usual bits again, unless asked
    assert _mode(path) == 0o666 & ~_umask()


@posix_only
def test_the_mode_option_sets_the_bits(tmp_path: Path) -> None:
    path = tmp_path / "concepts.toml"
    path.write_text("a = 1\n")
    os.chmod(path, 0o640)
    atomic.write_text(path, "a = 2\n", mode=_mode(path))
    assert _mode(path) == 0o640 and path.read_text() == "a = 2\n"
    assert _mode(atomic.write_bytes(tmp_path / "secret", b"s", mode=0o600)) == 0o600


@posix_only
def test_the_file_is_synced_before_the_rename_and_its_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src: object, dst: object) -> None:
        events.append("rename")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic.write_bytes(tmp_path / "f", b"data")
    assert events == ["fsync file", "rename", "fsync dir"]


def test_replace_dir_swaps_a_folder_in(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint"

    def build(value: str) -> Callable[[Path], None]:
        def fill(folder: Path) -> None:
            (folder / "state").write_text(value)
            (folder / "inner").mkdir()
            (folder / "inner" / "more").write_text(value)

        return fill

    atomic.replace_dir(path, build("one"))
    atomic.replace_dir(path, build("two"))
    assert (path / "state").read_text() == "two" and (path / "inner" / "more").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]


def test_a_failing_build_leaves_the_old_folder_and_no_debris(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint"
    atomic.replace_dir(path, lambda folder: (folder / "state").write_text("old"))

    def fail(folder: Path) -> None:
        (folder / "state").write_text("half")
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError, match="build failed"):
        atomic.replace_dir(path, fail)
    assert (path / "state").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]


def test_replace_dir_after_a_crash_between_its_renames(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint"
    atomic.replace_dir(path, lambda folder: (folder / "state").write_text("old"))
    path.rename(atomic.previous(path))  # what a crash after "old out" and before "new in" leaves
    atomic.replace_dir(path, lambda folder: (folder / "state").write_text("new"))
    assert (path / "state").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]


def _dead_pid() -> int:
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid  # reaped: no process has this pid now (barring reuse within the test)


@posix_only
def test_stray_temps_are_those_of_dead_writers(tmp_path: Path) -> None:
    dead = tmp_path / f".meta.json.{_dead_pid()}.0badf00d.tmp"
    dead.write_text("{")
    dead_folder = tmp_path / f".checkpoint.{_dead_pid()}.12345678.tmp"
    dead_folder.mkdir()
    (dead_folder / "state.pt").write_bytes(b"x")
    mine = atomic.temp_path(tmp_path / "loss.png")
    mine.write_bytes(b"x")
    alive = tmp_path / ".metrics.jsonl.1.abcdef01.tmp"  # pid 1 is always alive
    alive.write_text("")
    (tmp_path / "kept.json").write_text("{}")
    assert atomic.stray_temps(tmp_path) == sorted([dead, dead_folder])
    assert atomic.remove_stray_temps(tmp_path) == sorted([dead, dead_folder])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, alive.name, "kept.json"])
    assert atomic.stray_temps(tmp_path / "missing") == []


def test_a_lock_is_exclusive_and_dies_with_its_holder(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "run.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from tinv_cli.atomic import Lock; "
            "lock = Lock(Path(sys.argv[1])); assert lock.acquire(); print('held', flush=True); time.sleep(600)",
            str(path),
        ],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert not atomic.Lock(path).acquire(wait=False)
    finally:
        holder.kill()  # SIGKILL: the OS releases the lock, no code of the holder's runs
        holder.wait(timeout=60)
    mine = atomic.Lock(path)
    assert mine.acquire(wait=False) and mine.held
    assert not atomic.Lock(path).acquire(wait=False)  # another open file in this process is another owner
    mine.release()
    with atomic.Lock(path) as again:
        assert again.held
    assert not again.held


@posix_only
def test_a_lock_follows_its_name_when_a_sweeper_replaced_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    sweeper = atomic.Lock(path)
    assert sweeper.acquire()
    path.unlink()  # what a sweep does with a free lock, while the next holder is opening it
    mine = atomic.Lock(path)
    assert mine.acquire(wait=False)  # the old inode is locked by the sweeper: this one makes the file anew
    assert path.is_file()
    assert not atomic.Lock(path).acquire(wait=False)
    mine.release(), sweeper.release()

from __future__ import annotations

import threading
from pathlib import Path

from rtrec.domain.promotion import ProductionPointer
from rtrec.errors import DependencyError
from rtrec.services.model_watcher import ModelWatcher


class FakeStore:
    """A ModelStore whose published versions are folders holding one file."""

    def __init__(self) -> None:
        self.pointer: ProductionPointer | None = None
        self.reads = 0
        self.roles: list[str] = []
        self.fail_download = False

    def publish_pointer(self, version: str) -> None:
        self.pointer = ProductionPointer("m", version, "run", f"models/versions/{version}/", 0, {}, "ok")

    def read_pointer(self, role: str = "production") -> ProductionPointer | None:
        self.reads += 1
        self.roles.append(role)
        return self.pointer

    def download(self, version: str, target_dir: Path) -> Path:
        if self.fail_download:
            raise DependencyError("S3 is down")
        target_dir.mkdir(parents=True)
        (target_dir / "weights").write_text(f"weights of {version}")
        return target_dir

    def publish(self, version: str, model_dir: Path) -> str:  # pragma: no cover - not used by the watcher
        raise NotImplementedError

    def write_pointer(self, pointer: ProductionPointer, role: str = "production") -> None:  # pragma: no cover
        raise NotImplementedError

    def delete_pointer(self, role: str) -> None:  # pragma: no cover
        raise NotImplementedError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def load(version: str, folder: Path) -> str:
    return (folder / "weights").read_text()


def test_nothing_published_means_no_model(tmp_path):
    assert ModelWatcher(FakeStore(), load, tmp_path).current() is None


def test_loads_the_pointer_version_and_polls_at_most_every_n_seconds(tmp_path):
    store, clock = FakeStore(), Clock()
    store.publish_pointer("1")
    watcher = ModelWatcher(store, load, tmp_path, poll_seconds=30, clock=clock)
    assert watcher.current() == "weights of 1"
    assert watcher.version == "1"
    store.publish_pointer("2")
    clock.now = 29
    assert watcher.current() == "weights of 1"
    assert store.reads == 1
    clock.now = 30
    assert watcher.current() == "weights of 2"
    assert not list(tmp_path.glob("v1-*"))
    assert len(list(tmp_path.glob("v2-*/weights"))) == 1


def test_a_failed_download_keeps_serving_the_current_model(tmp_path):
    store, clock, errors = FakeStore(), Clock(), []
    store.publish_pointer("1")
    watcher = ModelWatcher(store, load, tmp_path, poll_seconds=1, clock=clock, on_error=errors.append)
    watcher.current()
    store.publish_pointer("2")
    store.fail_download = True
    clock.now = 5
    assert watcher.current() == "weights of 1"
    assert errors
    assert "S3 is down" in errors[0]
    store.fail_download = False
    clock.now = 10
    assert watcher.current() == "weights of 2"


def test_concurrent_requests_see_a_whole_model(tmp_path):
    store, clock = FakeStore(), Clock()
    store.publish_pointer("1")
    watcher = ModelWatcher(store, load, tmp_path, poll_seconds=0, clock=clock)
    seen: list[str | None] = []

    def request() -> None:
        for _ in range(50):
            seen.append(watcher.current())

    threads = [threading.Thread(target=request) for _ in range(4)]
    for thread in threads:
        thread.start()
    store.publish_pointer("2")
    for thread in threads:
        thread.join()
    assert set(seen) <= {"weights of 1", "weights of 2"}
    assert watcher.current() == "weights of 2"


def test_watchers_sharing_a_cache_folder_do_not_break_each_other(tmp_path):
    """Two processes (uvicorn workers) with one RTREC_MODEL_CACHE_DIR: each load gets a folder of its own."""
    store = FakeStore()
    store.publish_pointer("1")
    first = ModelWatcher(store, load, tmp_path / "cache", poll_seconds=0)
    second = ModelWatcher(store, load, tmp_path / "cache", poll_seconds=0)
    assert first.current() == second.current() == "weights of 1"
    folders = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(folders) == 2
    assert all(name.startswith("v1-") for name in folders)
    store.publish_pointer("2")
    assert first.current() == "weights of 2"
    assert second.current() == "weights of 2"  # its own v1 folder was not deleted under it
    assert sorted(p.name[:3] for p in (tmp_path / "cache").iterdir()) == ["v2-", "v2-"]  # each removed its old one


def test_an_os_error_while_loading_keeps_the_current_model(tmp_path):
    store = FakeStore()
    store.publish_pointer("1")
    errors: list[str] = []

    def flaky_load(version: str, folder: Path) -> str:
        if version == "2":
            raise FileNotFoundError(folder / "weights")
        return load(version, folder)

    watcher = ModelWatcher(store, flaky_load, tmp_path, poll_seconds=0, on_error=errors.append)
    assert watcher.current() == "weights of 1"
    store.publish_pointer("2")
    assert watcher.current() == "weights of 1"
    assert "FileNotFoundError" in errors[-1]


def test_folders_left_by_ended_processes_are_pruned_after_a_day(tmp_path):
    import os
    import time

    stale, recent = tmp_path / "v7-deadbeef0000", tmp_path / "v7-cafe00000000"
    for folder in (stale, recent):
        folder.mkdir()
        (folder / "weights").write_text("old")
    day_ago = time.time() - 2 * 86_400
    os.utime(stale, (day_ago, day_ago))
    store = FakeStore()
    store.publish_pointer("1")
    assert ModelWatcher(store, load, tmp_path).current() == "weights of 1"
    assert not stale.exists()
    assert recent.exists()


def test_a_shadow_watcher_drops_its_model_when_the_pointer_goes_but_production_keeps_it(tmp_path):
    for role, kept in (("production", "weights of 1"), ("shadow", None)):
        store, clock = FakeStore(), Clock()
        store.publish_pointer("1")
        watcher = ModelWatcher(store, load, tmp_path / role, poll_seconds=1, clock=clock, role=role)
        assert watcher.current() == "weights of 1"
        store.pointer = None
        clock.now = 1
        assert watcher.current() == kept
        assert set(store.roles) == {role}
    assert not list((tmp_path / "shadow").glob("v1-*"))

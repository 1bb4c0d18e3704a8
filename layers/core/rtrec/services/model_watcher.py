"""ModelWatcher: follows a model pointer (production, or the shadow candidate) and swaps the model atomically.

A request takes `current()` once and uses that object to the end, so it never sees a half-loaded
model: a new version is downloaded and loaded completely beside the old one, then published by one
reference assignment.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from rtrec.errors import RtrecError
from rtrec.ports import ModelStore

Model = TypeVar("Model")
STALE_FOLDER_SECONDS = 86_400


class ModelWatcher(Generic[Model]):
    def __init__(
        self,
        store: ModelStore,
        load: Callable[[str, Path], Model],
        work_dir: Path,
        *,
        poll_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_error: Callable[[str], None] = lambda _message: None,
        role: str = "production",
    ) -> None:
        """`role` names the pointer to follow. The production model is kept when its pointer disappears
        (serving never goes dark); a shadow candidate whose pointer is removed is dropped."""
        self._store = store
        self._role = role
        self._load = load
        self._work_dir = Path(work_dir)
        self._poll_seconds = poll_seconds
        self._clock = clock
        self._on_error = on_error
        self._lock = threading.Lock()
        self._model: Model | None = None
        self._version: str | None = None
        self._folder: Path | None = None
        self._checked_at: float | None = None

    @property
    def version(self) -> str | None:
        return self._version

    def current(self) -> Model | None:
        """The serving model, after checking the pointer if `poll_seconds` have passed.

        Only one thread checks and loads; the others keep serving the model they have. A failed
        check or load keeps the current model (and is reported through `on_error`).
        """
        now = self._clock()
        due = self._checked_at is None or now - self._checked_at >= self._poll_seconds
        if due and self._lock.acquire(blocking=self._model is None):
            try:
                if self._checked_at is None or now - self._checked_at >= self._poll_seconds:
                    self._checked_at = now
                    self._refresh()
            finally:
                self._lock.release()
        return self._model

    def _refresh(self) -> None:
        folder: Path | None = None
        try:
            pointer = self._store.read_pointer(self._role)
            if pointer is None and self._role != "production" and self._model is not None:
                self._drop()
                return
            if pointer is None or pointer.version == self._version:
                return
            # A folder of its own per load: processes (uvicorn workers) sharing the cache folder never
            # delete or overwrite each other's files.
            folder = self._work_dir / f"v{pointer.version}-{uuid.uuid4().hex[:12]}"
            self._store.download(pointer.version, folder)
            model = self._load(pointer.version, folder)
        except (RtrecError, OSError) as exc:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            self._on_error(f"keeping model {self._version}: {type(exc).__name__}: {exc}")
            return
        previous = self._folder
        self._model, self._version, self._folder = model, pointer.version, folder
        if previous is not None:
            # In-flight requests hold the previous model object; its files are no longer read.
            shutil.rmtree(previous, ignore_errors=True)
        self._prune_stale(keep=folder)

    def _drop(self) -> None:
        previous = self._folder
        self._model, self._version, self._folder = None, None, None
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)

    def _prune_stale(self, keep: Path) -> None:
        """Remove model folders left by processes that ended without cleaning up (a restart makes a new one
        each time). A day-old folder is safe to remove even if its process still runs: a loaded model keeps
        its towers and index in memory and reads no files."""
        cutoff = time.time() - STALE_FOLDER_SECONDS
        for folder in self._work_dir.glob("v*-*"):
            try:
                if folder != keep and folder.is_dir() and folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                continue

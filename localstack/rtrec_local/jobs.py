"""LocalJobRunner: SageMaker's training-job contract as a local subprocess.

The job gets the same environment a SageMaker training container gets (SM_MODEL_DIR,
SM_CHANNEL_<NAME>, SM_OUTPUT_DATA_DIR, SM_HPS and /opt/ml/input/config/hyperparameters.json,
here under `<root>/<job name>/`), so one entry point runs locally and as a SageMaker job.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from rtrec.errors import InvalidInputError

JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker's TrainingJobName pattern


@dataclass(frozen=True)
class JobPaths:
    root: Path

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def output_data_dir(self) -> Path:
        return self.root / "output" / "data"

    @property
    def failure_file(self) -> Path:
        return self.root / "output" / "failure"

    @property
    def config_dir(self) -> Path:
        return self.root / "input" / "config"

    def channel(self, name: str) -> Path:
        return self.root / "input" / "data" / name

    @property
    def log_file(self) -> Path:
        return self.root / "job.log"


@dataclass
class LocalJob:
    name: str
    paths: JobPaths
    process: subprocess.Popen[str]
    started_at: float

    def status(self) -> str:
        """SageMaker's TrainingJobStatus: InProgress, Completed or Failed."""
        code = self.process.poll()
        if code is None:
            return "InProgress"
        return "Completed" if code == 0 else "Failed"

    def failure_reason(self) -> str | None:
        if self.status() != "Failed":
            return None
        if self.paths.failure_file.exists():
            return self.paths.failure_file.read_text().strip()
        return f"exit code {self.process.returncode}; see {self.paths.log_file}"

    def wait(self, timeout_s: float | None = None) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout_s)
        return self.status()


class LocalJobRunner:
    def __init__(self, root: Path, python: str = sys.executable, module: str = "training.job") -> None:
        self.root = Path(root)
        self.python = python
        self.module = module

    def start(
        self,
        name: str,
        hyperparameters: Mapping[str, object],
        channels: Mapping[str, Path],
        env: Mapping[str, str],
        stream_to: IO[str] | None = None,
    ) -> LocalJob:
        """Lay out the job folder, link the channels in, and start the entry point."""
        if not JOB_NAME.match(name):
            raise InvalidInputError(f"job name {name!r} must match {JOB_NAME.pattern} (SageMaker's rule)")
        paths = JobPaths(self.root / name)
        if paths.root.exists():
            raise InvalidInputError(f"a job named {name!r} already exists under {self.root}; choose another name")
        for folder in (paths.model_dir, paths.output_data_dir, paths.config_dir):
            folder.mkdir(parents=True)
        # SageMaker writes every hyperparameter as a string.
        hps = {key: value if isinstance(value, str) else json.dumps(value) for key, value in hyperparameters.items()}
        (paths.config_dir / "hyperparameters.json").write_text(json.dumps(hps, indent=2))
        job_env = dict(env)
        for channel, source in channels.items():
            target = paths.channel(channel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(Path(source).resolve(), target_is_directory=True)
            job_env[f"SM_CHANNEL_{channel.upper()}"] = str(target)
        job_env.update(
            {
                "SM_MODEL_DIR": str(paths.model_dir),
                "SM_OUTPUT_DATA_DIR": str(paths.output_data_dir),
                "SM_OUTPUT_DIR": str(paths.output_data_dir.parent),
                "SM_INPUT_CONFIG_DIR": str(paths.config_dir),
                "SM_HPS": json.dumps(hps),
                "SM_CHANNELS": json.dumps(sorted(channels)),
                "SM_CURRENT_HOST": "algo-1",
                "TRAINING_JOB_NAME": name,
                "PYTHONUNBUFFERED": "1",
            }
        )
        log = paths.log_file.open("w")
        process = subprocess.Popen(
            [self.python, "-m", self.module],
            env=job_env,
            stdout=subprocess.PIPE if stream_to else log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        job = LocalJob(name, paths, process, time.time())
        if stream_to is not None:
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                log.flush()
                stream_to.write(line)
                stream_to.flush()
            process.wait()
            log.close()
        return job


class LocalTrainingJobs:
    """The TrainingJobs port over LocalJobRunner: jobs run in the background as subprocesses, each with the same
    channels and environment (the registry, the cloud endpoint), as SageMaker would run them from one definition.

    A job counts as in progress while its process lives: processes this object started are polled; a job folder
    left by another process is judged by the pid it recorded and by whether it wrote its result or failure."""

    def __init__(self, runner: LocalJobRunner, channels: Mapping[str, Path], env: Mapping[str, str]) -> None:
        self.runner = runner
        self.channels = dict(channels)
        self.env = dict(env)
        self._jobs: dict[str, LocalJob] = {}

    def start(self, name: str, hyperparameters: Mapping[str, str], tags: Mapping[str, str]) -> str:
        env = {**self.env, "RTREC_RUN_TAGS": json.dumps(dict(tags))}
        job = self.runner.start(name, hyperparameters, self.channels, env)
        (job.paths.root / "pid").write_text(str(job.process.pid))
        self._jobs[name] = job
        return name

    def job(self, name: str) -> LocalJob | None:
        return self._jobs.get(name)

    def in_progress(self, prefix: str) -> list[str]:
        running = []
        for name in existing_jobs(self.runner.root):
            if not name.startswith(prefix):
                continue
            own = self._jobs.get(name)
            if own is not None:
                if own.status() == "InProgress":
                    running.append(name)
            elif _foreign_job_running(JobPaths(self.runner.root / name)):
                running.append(name)
        return running


def _foreign_job_running(paths: JobPaths) -> bool:
    pid_file = paths.root / "pid"
    if not pid_file.exists() or paths.failure_file.exists() or (paths.output_data_dir / "result.json").exists():
        return False
    try:
        os.kill(int(pid_file.read_text()), 0)
    except (OSError, ValueError):
        return False  # the process is gone (or the pid file is unreadable): not running
    return True


def new_job_name(prefix: str = "rtrec-train") -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


def existing_jobs(root: Path) -> Sequence[str]:
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir()) if Path(root).is_dir() else []

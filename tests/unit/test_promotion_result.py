"""`rtrec promote`'s decision as a result object: the lines it prints, and the local scheduler reading it back from
the subprocess that ran the gate (never from the command's printed text)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from rtrec.adapters.aws.factory import AwsAdapters
from rtrec.domain.promotion import SHADOW_POINTER, ProductionPointer
from rtrec.settings import LocalSettings
from rtrec_local.cli import stack
from rtrec_local.cli.models import PromotionResult

PROMOTED = PromotionResult(
    version="3",
    promoted=True,
    reason="offline: no regression; off-policy: DR +4%",
    figures={"recall@10": 0.1234},
    s3_prefix="models/3/",
)
REJECTED = PromotionResult(version="4", promoted=False, reason="offline: recall@10 regressed", withdrawn=True)


def test_the_verdict_is_the_line_promote_prints():
    assert PROMOTED.verdict == "version 3 is now `production`: offline: no regression; off-policy: DR +4%"
    overridden = PromotionResult(version="3", promoted=True, reason="by hand", overridden=True)
    assert overridden.verdict == "version 3 is now `production` (OVERRIDDEN): by hand"
    assert REJECTED.verdict == "version 4 rejected: offline: recall@10 regressed"


@pytest.mark.parametrize("result", [PROMOTED, REJECTED])
def test_a_result_survives_its_json(result):
    assert PromotionResult.from_json(result.to_json()) == result


class ShadowStore:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def read_pointer(self, role: str = "production") -> ProductionPointer | None:
        assert role == SHADOW_POINTER
        return ProductionPointer(
            model_name="m", version="4", run_id="r", s3_prefix="models/4/", promoted_at=0, metrics={}, gate_reason=""
        )


def run_promote(writes: PromotionResult | None, stderr: str = "") -> Any:
    """subprocess.run for `rtrec promote --result-file F`: writes `writes` to F (None: fails before deciding) and
    prints text that must not be what the scheduler goes by."""

    def run(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        assert command[:4] == [stack.sys.executable, "-m", "rtrec_local.cli", "promote"]
        assert "--withdraw-on-reject" in command
        if writes is not None:
            Path(command[command.index("--result-file") + 1]).write_text(writes.to_json())
        return subprocess.CompletedProcess(
            command,
            0 if writes and writes.promoted else 1,
            stdout="[rtrec 00:00:00] version 9 is now `production`: printed text\n",
            stderr=stderr,
        )

    return run


@pytest.mark.parametrize("result", [PROMOTED, REJECTED])
def test_the_scheduler_reads_the_gates_result(monkeypatch, capsys, tmp_path, result):
    monkeypatch.setattr(AwsAdapters, "model_store", lambda _self: ShadowStore())
    monkeypatch.setattr(stack.subprocess, "run", run_promote(result))
    read = stack.promotion_step("http://localhost:1", LocalSettings(state_dir=tmp_path))
    assert read == result
    assert read.promoted is result.promoted
    assert capsys.readouterr().out.rstrip().endswith(f"promotion gate, shadow candidate 4: {result.verdict}")


def test_a_gate_that_fails_before_deciding_reports_its_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(AwsAdapters, "model_store", lambda _self: ShadowStore())
    monkeypatch.setattr(stack.subprocess, "run", run_promote(None, stderr="error: the registry is locked\n"))
    assert stack.promotion_step("http://localhost:1", LocalSettings(state_dir=tmp_path)) is None
    assert capsys.readouterr().out.rstrip().endswith("shadow candidate 4: error: the registry is locked")

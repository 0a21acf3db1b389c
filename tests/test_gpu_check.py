"""benchmarks/gpu.sh --tiny: every check of the GPU check on tiny models on the CPU passes or says why it was
skipped (fp16 and compile need CUDA)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_sh_tiny_passes_every_check(tmp_path: Path) -> None:
    out = tmp_path / "checks.json"
    env = {**os.environ, "PYTHON": sys.executable, "TINV_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--tiny", "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "+ timeout 480" in done.stderr  # it says what it runs
    report = json.loads(out.read_text(encoding="utf-8"))
    checks = {c["name"]: c for c in report["checks"]}
    assert all(c["status"] in ("PASS", "SKIP") for c in checks.values()), checks
    assert all(c["detail"] for c in checks.values() if c["status"] == "SKIP")  # a skip says why
    for name in ("resume", "validation", "speed tiny: example, tinv, floor", "speed tiny-sdxl: tinv"):
        assert checks[name]["status"] == "PASS", checks[name]
    if not _cuda():
        assert checks["fp16 GradScaler"]["status"] == "SKIP"
    variants = {(r["run"], r["variant"]) for r in report["speed"]}
    assert {v for _, v in variants} == {"a", "b", "c"}
    assert all(r["step_s"] > 0 and r["peak_start_bytes"] >= r["peak_bytes"] for r in report["speed"])
    assert "wrote docs/benchmarks.md" not in done.stdout  # a --tiny run writes no figures


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()

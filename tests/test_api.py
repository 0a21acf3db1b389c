"""The public Python API: docs/api.md's examples run as written, and `import tinv_cli` stays light."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tinv_cli

REPO = Path(__file__).resolve().parent.parent
API_DOC = REPO / "docs" / "api.md"


def _examples() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", API_DOC.read_text(encoding="utf-8"), flags=re.S | re.M)


@pytest.mark.slow
def test_the_documented_examples_run_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(REPO / "concepts.toml", tmp_path)
    shutil.copytree(REPO / "data", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    examples = _examples()
    assert (
        len(examples) >= 8
    )  # train, callbacks, generate, registry, files, own pipeline, versions, eval, errors
    namespace: dict[str, object] = {"__name__": "api_examples"}
    for number, code in enumerate(examples, 1):
        exec(compile(code, f"{API_DOC.name} example {number}", "exec"), namespace)
    # What the examples left behind, checked from outside them.
    assert sorted(p.name for p in (tmp_path / "samples").glob("*.png")) == [
        "a-photo-of-a-violet-kite-1-1.png",
        "a-photo-of-a-violet-kite-1-2.png",
    ]
    registry = tinv_cli.Registry()
    assert [e.ref for e in registry.list()] == ["kite-copy@1", "violet-kite@2"]


def test_import_tinv_cli_imports_no_ml_library() -> None:
    code = (
        "import sys, tinv_cli; dir(tinv_cli); "
        "print([m for m in ('torch', 'diffusers', 'transformers', 'safetensors') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_public_name_is_the_object_its_module_defines() -> None:
    lazy = tinv_cli._LAZY
    for name in tinv_cli.__all__:
        value = getattr(tinv_cli, name)
        if name in lazy:
            assert value is getattr(importlib.import_module(lazy[name]), name)
            # Defined there, not re-exported from elsewhere.
            assert getattr(value, "__module__", lazy[name]) == lazy[name], name
    assert set(tinv_cli.__all__) <= set(dir(tinv_cli))
    with pytest.raises(AttributeError):
        _ = tinv_cli.no_such_name  # type: ignore[attr-defined]

"""The command line as a user meets it: start-up cost, the error funnel, and the registry commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tinv_cli import __version__
from tinv_cli.cli import app

runner = CliRunner()


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def test_help_imports_no_ml_library() -> None:
    code = (
        "import sys, runpy\n"
        "sys.argv = ['tinv', '--help']\n"
        "try:\n"
        "    runpy.run_module('tinv_cli', run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'safetensors') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Usage" in out
    assert out.strip().splitlines()[-1] == "HEAVY="


COMMANDS = [
    "init",
    "check",
    "train",
    "sample",
    "eval",
    "push",
    "pull",
    "search",
    "list",
    "home",
    "show",
    "rm",
    "import",
    "export",
]


def test_the_command_list_is_every_registered_command() -> None:
    """So a new command cannot miss the help test below."""
    from tinv_cli.cli import app

    registered = [
        command.name or command.callback.__name__.replace("_", "-")  # type: ignore[union-attr]
        for command in app.registered_commands
    ]
    assert sorted(registered) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"tinv {__version__}"


def test_module_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tinv_cli", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"tinv {__version__}"


def test_error_is_one_line_with_hint_and_exit_1() -> None:
    result = invoke("show", "no-such-concept")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("Error: ") and "no-such-concept" in lines[0]
    assert lines[1].startswith("Hint: ")
    assert result.stdout == ""


def test_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINV_DEBUG", "1")
    result = invoke("show", "no-such-concept")
    assert result.exit_code == 1
    from tinv_cli.errors import NotFoundError

    assert isinstance(result.exception, NotFoundError)


def test_home_prints_tinv_home() -> None:
    result = invoke("home")
    assert result.exit_code == 0
    assert result.stdout.strip() == os.environ["TINV_HOME"]
    data = json.loads(invoke("home", "--json").stdout)
    assert data["home"] == os.environ["TINV_HOME"]


def _a1111_file(folder: Path, stem: str, vectors: int = 16, width: int = 768) -> Path:
    import torch

    path = folder / f"{stem}.pt"
    vec = torch.randn(vectors, width)
    torch.save(
        {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": vec},
            "name": stem,
            "step": 1200,
            "sd_checkpoint": None,
            "sd_checkpoint_name": None,
        },
        path,
    )
    return path


def test_import_list_show_export_rm(tmp_path: Path) -> None:
    path = _a1111_file(tmp_path, "bad-hands", vectors=16)
    result = invoke("import", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "bad-hands@1"
    assert "a1111" in result.stderr and "16 vectors" in result.stderr and "SD 1.x" in result.stderr

    listed = json.loads(invoke("list", "--json").stdout)
    assert [(e["name"], e["version"], e["vectors"], e["family"]) for e in listed] == [
        ("bad-hands", 1, 16, "sd1")
    ]
    assert "bad-hands" in invoke("list").stdout

    shown = invoke("show", "bad-hands")
    assert shown.exit_code == 0 and "768-wide text encoder (SD 1.x)" in shown.stdout
    assert json.loads(invoke("show", "bad-hands", "--json").stdout)["source"]["format"] == "a1111"

    # Importing again under the same name keeps the first as version 1.
    assert invoke("import", str(path)).stdout.strip() == "bad-hands@2"
    assert json.loads(invoke("show", "bad-hands", "--json").stdout)["versions"] == [1, 2]

    out = tmp_path / "out" / "bad-hands.safetensors"
    exported = invoke("export", "bad-hands@1", "--format", "kohya", "-o", str(out))
    assert exported.exit_code == 0, exported.output
    assert exported.stdout.strip() == str(out)
    again = invoke("export", "bad-hands@1", "--format", "kohya", "-o", str(out))
    assert again.exit_code == 1 and "--force" in again.stderr

    declined = invoke("rm", "bad-hands", input="n\n")
    assert declined.exit_code == 0 and "Nothing removed" in declined.stderr
    assert invoke("rm", "bad-hands@1", "--yes").exit_code == 0
    assert json.loads(invoke("show", "bad-hands", "--json").stdout)["versions"] == [2]
    assert invoke("rm", "bad-hands", "--yes").exit_code == 0
    assert json.loads(invoke("list", "--json").stdout) == []


def test_import_of_a_corrupt_file_leaves_the_registry_unchanged(tmp_path: Path) -> None:
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    result = invoke("import", str(bad))
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "broken.safetensors" in result.stderr
    assert json.loads(invoke("list", "--json").stdout) == []
    registry = Path(os.environ["TINV_HOME"]) / "registry"
    assert not registry.exists() or not any(registry.iterdir())


def test_unknown_export_format_is_refused(tmp_path: Path) -> None:
    invoke("import", str(_a1111_file(tmp_path, "x", vectors=1)))
    result = invoke("export", "x", "--format", "ckpt")
    assert result.exit_code == 1
    assert "unknown export format" in result.stderr and "a1111" in result.stderr


def test_init_then_add_concept_then_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    images = tmp_path / "data" / "cat-toy"
    images.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (64, 64), (i * 40, 10, 10)).save(images / f"{i}.png")

    assert invoke("init").exit_code == 0
    template = (tmp_path / "concepts.toml").read_text()
    refused = invoke("init")
    assert refused.exit_code == 1 and "exists" in refused.stderr

    added = invoke("init", "--concept", "cat-toy", "--images", "data/cat-toy", "--initializer", "toy")
    assert added.exit_code == 0, added.output
    text = (tmp_path / "concepts.toml").read_text()
    assert text.startswith(template)

    checked = invoke("check", "--json")
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout)["concepts"] == ["cat-toy"]


def test_check_reports_every_mistake_with_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "concepts.toml").write_text(
        '[model]\nbase = "some/model"\n\n[train]\nstpes = 10\n\n'
        '[concepts.cat-toy]\ntoken = "<cat-toy>"\ninitializer = "toy"\nkind = "objekt"\nimages = "missing"\n'
    )
    result = invoke("check")
    assert result.exit_code == 1
    err = result.stderr
    assert "concepts.toml:5:" in err and "steps" in err
    assert "concepts.toml:10:" in err
    assert "concepts.toml:11:" in err
    assert "Error: " in err and "3 problems" in err


def test_check_refuses_a_name_the_registry_would_refuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "imgs" / "0.png")
    name = "a" * 97  # the registry's (and the Hub's) limit is 96 characters
    (tmp_path / "concepts.toml").write_text(
        f'[model]\nbase = "some/model"\n\n[concepts.{name}]\nimages = "imgs"\ninitializer = "toy"\n'
    )
    result = invoke("check")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f'Error: {tmp_path / "concepts.toml"}:4: concept name "{name}" is not allowed'
    )
    assert "at most 96 characters" in result.stderr
    assert result.stdout == ""


def test_init_with_a_bad_concept_creates_no_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("init", "--concept", "cat-toy", "--images", "nowhere", "--initializer", "toy")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "nowhere" in result.stderr
    assert not (tmp_path / "concepts.toml").exists()


def test_init_checks_concept_options_with_the_file_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "imgs" / "0.png")
    args = ["init", "--concept", "cat-toy", "--images", "imgs", "--initializer", "toy", "--vectors", "76"]
    result = invoke(*args)
    assert result.exit_code == 1 and result.stdout == ""
    assert (
        result.stderr.startswith("Error: ") and "vectors: must be between 1 and 75, found 76" in result.stderr
    )
    assert not (tmp_path / "concepts.toml").exists()


def test_tables_line_up_by_terminal_cells(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.cells import cell_len

    from tinv_cli.cli.render import table

    table(["name", "token", "n"], [("cat-toy", "<cat-toy>", 1), ("猫", "<猫>", 12), ("x", None, 3)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "token", "n"]  # not a terminal: no styling codes
    # Each column starts at the same terminal cell on every line, wide characters included.
    starts = [
        cell_len(line[: line.rindex(cell)]) for line, cell in zip(lines, ["n", "1", "12", "3"], strict=True)
    ]
    assert len(set(starts)) == 1
    assert lines[3].startswith("x ") and "None" not in lines[3]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sample", "a cat", "-n", "0"], "Error: Invalid value for '--num-images' / '-n'"),
        (["sample", "a cat", "--seed", "-1"], "Error: Invalid value for '--seed'"),
        (["list", "--bogus"], "Error: No such option: --bogus"),
        (["no-such-command"], "Error: No such command 'no-such-command'"),
    ],
)
def test_usage_errors_end_like_every_other_error(args: list[str], message: str) -> None:
    """One Error line, a Hint naming the command's help, exit code 1 (not Click's usage text and exit 2)."""
    result = invoke(*args)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(message), lines
    assert lines[1].startswith("Hint: see `") and lines[1].endswith(" --help`")


def test_bare_tinv_prints_the_help_and_succeeds() -> None:
    result = invoke()
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage:") and "Commands" in result.stdout


def test_a_version_with_a_corrupt_tinv_json_is_warned_about_and_removable() -> None:
    import torch

    from tinv_cli.embedding import Embedding
    from tinv_cli.registry.store import Registry

    registry = Registry()
    for _ in range(2):
        registry.add("cat-toy", Embedding("<cat-toy>", (torch.zeros(1, 8),)), source={"type": "imported"})
    (registry.root / "cat-toy" / "2" / "tinv.json").write_text("{not json", encoding="utf-8")
    listed = invoke("list")
    assert listed.exit_code == 0
    assert "Note: cat-toy@2 is not listed: its tinv.json cannot be read" in listed.stderr
    assert "cat-toy" in listed.stdout  # version 1 stays current
    removed = invoke("rm", "cat-toy@2", "--yes")
    assert removed.exit_code == 0, removed.stderr
    assert "Removed cat-toy@2" in removed.stderr
    assert [e.version for e in registry.versions("cat-toy")] == [1] and registry.unreadable() == []
    invoke("rm", "cat-toy@1", "--yes")

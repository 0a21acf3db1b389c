"""Writing concepts.toml: the template, `tinv init`, and adding a concept without touching what is there."""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path

import pytest

from tinv_cli.errors import DataError, ProjectError, TinvError
from tinv_cli.project.config import DEFAULT_BASE_MODEL, Concept, HubConfig, ModelConfig, Project, TrainConfig
from tinv_cli.project.edit import add_concept, init_project
from tinv_cli.project.load import PROJECT_FILE, load_project
from tinv_cli.project.schema import table_settings
from tinv_cli.project.template import TEMPLATE, toml_string

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

USER_FILE = """\
# My concepts. Keep this comment!
[model]
base = "org/model"   # pinned below
revision = "abc"

[train]
steps = 500    # short runs while testing
"""


def make_images(folder: Path, count: int = 2) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (16, 16), (60 * i, 10, 10)).save(folder / f"{i}.png")
    return folder


@pytest.fixture
def project_file(tmp_path: Path) -> Path:
    path = tmp_path / PROJECT_FILE
    path.write_text(USER_FILE, encoding="utf-8")
    make_images(tmp_path / "data" / "cat-toy")
    return path


# --- the template -------------------------------------------------------------------------------------------------


def test_template_parses_to_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / PROJECT_FILE
    path.write_text(TEMPLATE)
    assert load_project(path, check_images=False) == Project(path=path)
    assert f'base = "{DEFAULT_BASE_MODEL}"' in TEMPLATE


def test_template_lists_every_train_key_with_a_comment() -> None:
    train_section = TEMPLATE.split("[train]\n", 1)[1].split("\n[", 1)[0]
    keys = re.findall(r"^(\w+) = ", train_section, flags=re.MULTILINE)
    assert tuple(keys) == TrainConfig.field_names()
    parsed = tomllib.loads(TEMPLATE)["train"]
    assert parsed == {k: v for k, v in TrainConfig().to_dict().items()}
    for line in train_section.splitlines():
        if re.match(r"^\w+ = ", line):
            assert "#" in line, f"no comment on: {line}"


def _section(start: str) -> str:
    return TEMPLATE.split(start + "\n", 1)[1].split("\n#\n" if start.startswith("#") else "\n\n", 1)[0]


@pytest.mark.parametrize(
    ("start", "table"),
    [
        ("[model]", ModelConfig),
        ("[train]", TrainConfig),
        ("[hub]", HubConfig),
        ("# [concepts.cat-toy]", Concept),
    ],
)
def test_template_lists_every_key_of_every_table_with_its_help(start: str, table: type) -> None:
    lines = _section(start).splitlines()
    settings = table_settings(table)
    assert [re.match(r"(?:# )?(\w+) = ", line).group(1) for line in lines] == list(settings)  # type: ignore[union-attr]
    for line, setting in zip(lines, settings.values(), strict=True):
        assert line.endswith(f" # {setting.comment}"), line
        # A key is commented out exactly when its default cannot be written (none, or None).
        assert line.startswith("# ") == (start.startswith("#") or not setting.writes_default), line


def test_template_comments_out_what_has_no_default_and_writes_floats_readably() -> None:
    assert '\n# revision = "main"' in TEMPLATE and '\n# namespace = "your-hf-username"' in TEMPLATE
    for line in (
        "learning_rate = 5.0e-4 ",
        "adam_weight_decay = 1.0e-2 ",
        "adam_epsilon = 1.0e-8 ",
        "flip_p = 0.5 ",
    ):
        assert f"\n{line}" in TEMPLATE


def test_template_example_concept_is_commented_out_and_valid_when_uncommented(tmp_path: Path) -> None:
    assert "concepts" not in tomllib.loads(TEMPLATE)
    uncommented = re.sub(
        r"^# (\[concepts|token|images|initializer|init|kind|vectors|validation_prompt|steps)",
        r"\1",
        TEMPLATE,
        flags=re.MULTILINE,
    )
    path = tmp_path / PROJECT_FILE
    path.write_text(uncommented)
    make_images(tmp_path / "data" / "cat-toy")
    concept = load_project(path).concepts["cat-toy"]
    assert concept.token == "<cat-toy>" and concept.train.steps == 2000


# --- init_project -------------------------------------------------------------------------------------------------


def test_init_writes_the_template(tmp_path: Path) -> None:
    written = init_project(tmp_path / PROJECT_FILE)
    assert written == tmp_path / PROJECT_FILE
    assert written.read_text() == TEMPLATE


def test_init_into_a_folder(tmp_path: Path) -> None:
    assert init_project(tmp_path) == tmp_path / PROJECT_FILE
    nested = init_project(tmp_path / "new" / "proj" / PROJECT_FILE)
    assert nested.read_text() == TEMPLATE


def test_init_refuses_to_overwrite(project_file: Path) -> None:
    before = project_file.read_bytes()
    with pytest.raises(TinvError) as info:
        init_project(project_file)
    assert "already exists" in info.value.message and str(project_file) in info.value.message
    assert info.value.hint
    with pytest.raises(TinvError):
        init_project(project_file.parent)
    assert project_file.read_bytes() == before


# --- add_concept --------------------------------------------------------------------------------------------------


def test_add_concept_appends_and_keeps_everything(project_file: Path) -> None:
    before = project_file.read_bytes()
    concept = add_concept(
        project_file, "cat-toy", project_file.parent / "data" / "cat-toy", initializer="toy"
    )
    after = project_file.read_bytes()
    assert after.startswith(before)
    assert concept == Concept(
        name="cat-toy",
        token="<cat-toy>",
        images=project_file.parent / "data" / "cat-toy",
        initializer="toy",
        train=TrainConfig(steps=500),
    )
    assert load_project(project_file).concepts == {"cat-toy": concept}
    added = after[len(before) :].decode()
    assert 'images = "data/cat-toy"' in added
    assert added.startswith("\n[concepts.cat-toy]\n")


def test_add_two_concepts_and_options(project_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = project_file.parent
    make_images(root / "styles" / "ink")
    add_concept(project_file, "cat-toy", root / "data" / "cat-toy", initializer="toy")
    middle = project_file.read_bytes()
    # A relative images path is relative to the current folder, as typed on the command line.
    monkeypatch.chdir(root / "styles")
    concept = add_concept(
        project_file, "ink", Path("ink"), token="<ink-style>", initializer="ink", kind="style", vectors=4
    )
    assert project_file.read_bytes().startswith(middle)
    assert (concept.token, concept.kind, concept.vectors) == ("<ink-style>", "style", 4)
    assert concept.images == root / "styles" / "ink"
    assert 'images = "styles/ink"' in project_file.read_text()
    assert set(load_project(project_file).concepts) == {"cat-toy", "ink"}


def test_add_concept_escapes_strings(project_file: Path) -> None:
    folder = make_images(project_file.parent / 'odd "dir" \\ ü')
    initializer = 'a "quoted"\\ wörd'
    concept = add_concept(project_file, "v1.5", folder, initializer=initializer, token='<v1.5-"x">')
    assert concept.initializer == initializer
    assert concept.token == '<v1.5-"x">'
    assert concept.images == folder
    assert '[concepts."v1.5"]' in project_file.read_text()
    assert load_project(project_file).concepts["v1.5"] == concept


def test_toml_string_round_trips_every_character_class() -> None:
    text = 'q" b\\ t\t n\n r\r del\x7f nul\x00 bell\x07 é 😀 \u2028'
    assert tomllib.loads(f"k = {toml_string(text)}")["k"] == text


def test_add_concept_to_a_file_without_final_newline_and_to_crlf(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs")
    path = tmp_path / PROJECT_FILE
    path.write_bytes(b"[train]\nsteps = 7")
    add_concept(path, "a", tmp_path / "imgs", initializer="x")
    assert path.read_bytes().startswith(b"[train]\nsteps = 7\n\n[concepts.a]\n")
    assert load_project(path).concepts["a"].train.steps == 7

    path.write_bytes(b"# windows\r\n[train]\r\nsteps = 7\r\n")
    add_concept(path, "b", tmp_path / "imgs", initializer="x")
    data = path.read_bytes()
    assert data.startswith(b"# windows\r\n[train]\r\nsteps = 7\r\n\r\n[concepts.b]\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_add_concept_to_the_template(tmp_path: Path) -> None:
    path = init_project(tmp_path)
    make_images(tmp_path / "data" / "cat-toy")
    add_concept(path, "cat-toy", tmp_path / "data" / "cat-toy", initializer="toy")
    text = path.read_text()
    assert text.startswith(TEMPLATE)
    assert load_project(path).concepts["cat-toy"].train == TrainConfig()


def test_add_concept_keeps_the_file_mode(project_file: Path) -> None:
    os.chmod(project_file, 0o640)
    add_concept(project_file, "cat-toy", project_file.parent / "data" / "cat-toy", initializer="toy")
    assert stat.S_IMODE(project_file.stat().st_mode) == 0o640
    leftovers = [p.name for p in project_file.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


# --- add_concept refusals leave the file byte-identical ------------------------------------------------------------


def refused(path: Path, error: type[Exception], **kwargs: object) -> Exception:
    before = path.read_bytes()
    arguments: dict = {"name": "cat-toy", "images": path.parent / "data" / "cat-toy", "initializer": "toy"}
    arguments.update(kwargs)
    with pytest.raises(error) as info:
        add_concept(path, **arguments)
    assert path.read_bytes() == before
    return info.value


def test_duplicate_name_is_refused(project_file: Path) -> None:
    add_concept(project_file, "cat-toy", project_file.parent / "data" / "cat-toy", initializer="toy")
    error = refused(project_file, TinvError, token="<other>")
    assert "already exists" in str(error)


def test_duplicate_token_is_refused(project_file: Path) -> None:
    add_concept(project_file, "cat-toy", project_file.parent / "data" / "cat-toy", initializer="toy")
    error = refused(project_file, TinvError, name="other", token="<cat-toy>")
    assert "already used by concept 'cat-toy'" in str(error)


def test_missing_image_folder_is_refused(project_file: Path) -> None:
    error = refused(project_file, DataError, images=project_file.parent / "nope")
    assert "folder does not exist" in str(error)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"kind": "objekt"}, 'did you mean "object"?'),
        ({"vectors": 0}, "between 1 and 75"),
        ({"token": "no-brackets"}, "must look like <cat-toy>"),
        ({"name": "bad name"}, "is not allowed"),
        ({"initializer": ""}, "non-empty"),
    ],
)
def test_invalid_values_are_refused(project_file: Path, kwargs: dict, expected: str) -> None:
    error = refused(project_file, ProjectError, **kwargs)
    assert isinstance(error, ProjectError)
    # The problem is in text that was never written, so it has no line in the file.
    assert error.problems and all(p.line == 0 for p in error.problems)
    assert expected in error.problems[0].message
    assert "new concept" in error.problems[0].message


def test_missing_initializer_is_refused(project_file: Path) -> None:
    error = refused(project_file, TinvError, initializer=None)
    assert isinstance(error, TinvError) and "--initializer" in (error.hint or "")


def test_a_broken_file_is_reported_not_edited(project_file: Path) -> None:
    project_file.write_text(USER_FILE + "stpes = 1\n")
    error = refused(project_file, ProjectError)
    assert isinstance(error, ProjectError)
    assert [p.line for p in error.problems] == [8]

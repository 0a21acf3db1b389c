"""Reading concepts.toml: every problem at once with its line, the parsed dataclasses, and the tokenizer checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tinv_cli.errors import DataError, NotFoundError, ProjectError
from tinv_cli.images import IMAGE_EXTENSIONS, image_problems, list_images
from tinv_cli.project.config import Concept, HubConfig, ModelConfig, Project, TrainConfig
from tinv_cli.project.load import PROJECT_FILE, find_project, load_project
from tinv_cli.project.schema import table_settings
from tinv_cli.project.tokens import check_project, initializer_plan

TOKENIZER_ASSETS = Path(__file__).resolve().parents[1] / "assets" / "tokenizer"


def make_images(folder: Path, count: int = 2) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (16, 16), (40 * i, 100, 200)).save(folder / f"img{i}.png")
    return folder


def write_project(root: Path, text: str) -> Path:
    path = root / PROJECT_FILE
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path, check_images: bool = True) -> list[tuple[int, str]]:
    with pytest.raises(ProjectError) as info:
        load_project(path, check_images=check_images)
    return [(p.line, p.message) for p in info.value.problems]


def only_problem(path: Path, check_images: bool = True) -> tuple[int, str]:
    problems = problems_of(path, check_images)
    assert len(problems) == 1, problems
    return problems[0]


# --- every problem at once ------------------------------------------------------------------------------------


def test_three_mistakes_reported_together_with_lines(tmp_path: Path) -> None:
    make_images(tmp_path / "data" / "cat-toy")
    path = write_project(
        tmp_path,
        """\
# my project
[model]
base = "org/model"

[train]
stpes = 2000
batch_size = 1

[concepts.cat-toy]
initializer = "toy"
kind = "objekt"
images = "data/cat-toy"

[concepts.dog]
initializer = "dog"
images = "data/dog"   # not there
""",
    )
    with pytest.raises(ProjectError) as info:
        load_project(path)
    problems = info.value.problems
    assert [p.line for p in problems] == [6, 11, 16]
    assert all(p.path == path for p in problems)
    assert 'unknown key "stpes"' in problems[0].message
    assert 'did you mean "steps"?' in problems[0].message
    assert '"objekt"' in problems[1].message and 'did you mean "object"?' in problems[1].message
    assert "folder does not exist" in problems[2].message
    assert str(tmp_path / "data" / "dog") in problems[2].message
    assert "3 problems" in info.value.message
    assert f"{path}:6:" in str(problems[0])


# --- a valid file -----------------------------------------------------------------------------------------------


def test_valid_file_gives_dataclasses_with_merged_train_and_absolute_paths(tmp_path: Path) -> None:
    make_images(tmp_path / "data" / "cat-toy")
    make_images(tmp_path / "styles" / "ink")
    path = write_project(
        tmp_path,
        """\
[model]
base = "org/some-model"
revision = "v2"

[train]
steps = 1000
learning_rate = 1        # an integer is fine where a number is expected
mixed_precision = "no"

[hub]
namespace = "me"
private = true

[concepts.cat-toy]
token = "<cat-toy>"
initializer = "toy"
images = "data/cat-toy"
vectors = 2
validation_prompt = "a <cat-toy> on a beach"

[concepts.cat-toy.train]
steps = 20
flip_p = 0.0

[concepts.ink]
kind = "style"
init = "random"
images = "styles/ink/"
""",
    )
    project = load_project(path)
    base_train = TrainConfig(steps=1000, learning_rate=1.0, mixed_precision="no")
    assert project == Project(
        path=path,
        model=ModelConfig(base="org/some-model", revision="v2"),
        train=base_train,
        hub=HubConfig(namespace="me", private=True),
        concepts={
            "cat-toy": Concept(
                name="cat-toy",
                token="<cat-toy>",
                images=tmp_path / "data" / "cat-toy",
                initializer="toy",
                vectors=2,
                validation_prompt="a <cat-toy> on a beach",
                train=TrainConfig(steps=20, learning_rate=1.0, mixed_precision="no", flip_p=0.0),
            ),
            "ink": Concept(
                name="ink",
                token="<ink>",
                images=tmp_path / "styles" / "ink",
                init="random",
                kind="style",
                train=base_train,
            ),
        },
    )
    assert isinstance(project.train.learning_rate, float)
    assert project.path.is_absolute() and project.concepts["ink"].images.is_absolute()


def test_relative_project_path_and_folder_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_images(tmp_path / "imgs")
    write_project(tmp_path, '[concepts.a]\ninitializer = "x"\nimages = "imgs"\n')
    monkeypatch.chdir(tmp_path)
    project = load_project(Path(PROJECT_FILE))
    assert project.path == tmp_path / PROJECT_FILE
    assert project.concepts["a"].images == tmp_path / "imgs"
    assert load_project(tmp_path) == project


def test_local_model_folder_is_resolved_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "models" / "sd").mkdir(parents=True)
    path = write_project(tmp_path, '[model]\nbase = "models/sd"\n')
    assert load_project(path).model.base == str(tmp_path / "models" / "sd")
    path.write_text('[model]\nbase = "./not-yet"\n')
    assert load_project(path).model.base == str(tmp_path / "not-yet")
    path.write_text('[model]\nbase = "org/hub-model"\n')
    assert load_project(path).model.base == "org/hub-model"


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    path = write_project(tmp_path, "")
    assert load_project(path) == Project(path=path)


# --- unknown keys -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ('[modle]\nbase = "x"\n', 1, 'unknown table or key "modle"; did you mean "model"?'),
        ('[model]\nbsae = "x"\n', 2, 'unknown key "bsae" in [model]; did you mean "base"?'),
        ("[hub]\n\nprivat = true\n", 3, 'unknown key "privat" in [hub]; did you mean "private"?'),
        ("[train]\ncolour = 1\n", 2, 'unknown key "colour" in [train]'),
        ('[concepts.a]\nimages = "i"\ninitializer = "x"\ntokn = "<a>"\n', 4, 'did you mean "token"?'),
        (
            '[concepts.a]\nimages = "i"\ninitializer = "x"\nsteps = 3\n',
            4,
            "training settings go in [concepts.a.train]",
        ),
        (
            '[concepts.a]\nimages = "i"\ninitializer = "x"\n[concepts.a.train]\nbatchsize = 2\n',
            5,
            "batch_size",
        ),
    ],
)
def test_unknown_keys(tmp_path: Path, text: str, line: int, expected: str) -> None:
    found_line, message = only_problem(write_project(tmp_path, text), check_images=False)
    assert found_line == line
    assert expected in message


# --- types --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("steps = true", "expected an integer, found true"),  # bool is not int
        ('steps = "3000"', 'expected an integer, found the string "3000"'),
        ("steps = 1.5", "expected an integer, found 1.5"),
        ("learning_rate = false", "expected a number, found false"),
        ('scale_lr = "yes"', 'expected true or false, found the string "yes"'),
        ("scale_lr = 1", "expected true or false, found 1"),
        ("mixed_precision = 16", "expected a string, found 16"),
        ("seed = [1]", "expected an integer, found an array"),
        ("seed = {a = 1}", "expected an integer, found a table"),
        ("learning_rate = nan", "expected a finite number"),
        ("learning_rate = inf", "expected a finite number"),
    ],
)
def test_wrong_types(tmp_path: Path, assignment: str, expected: str) -> None:
    line, message = only_problem(write_project(tmp_path, f"[train]\n{assignment}\n"))
    assert line == 2
    assert message.startswith(f"[train] {assignment.split()[0]}: ")
    assert expected in message


def test_int_accepted_where_float_expected(tmp_path: Path) -> None:
    project = load_project(write_project(tmp_path, "[train]\nflip_p = 1\nmax_grad_norm = 2\n"))
    assert project.train.flip_p == 1.0 and isinstance(project.train.flip_p, float)
    assert project.train.max_grad_norm == 2.0


def test_tables_that_are_not_tables(tmp_path: Path) -> None:
    path = write_project(tmp_path, 'train = 3\nconcepts = "x"\n[model]\nbase = 5\n')
    assert problems_of(path) == [
        (1, "train must be a table, found 3"),
        (2, 'concepts must be a table, found the string "x"'),
        (4, "[model] base: expected a string, found 5"),
    ]


def test_concept_that_is_not_a_table(tmp_path: Path) -> None:
    path = write_project(tmp_path, "[concepts]\na = 1\n")
    assert only_problem(path) == (2, 'concept "a" must be a table, found 1')


# --- ranges and choices -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("steps = 0", "at least 1"),
        ("batch_size = 0", "at least 1"),
        ("gradient_accumulation = -1", "at least 1"),
        ("learning_rate = 0", "greater than 0"),
        ("learning_rate = -1e-4", "greater than 0"),
        ("resolution = 500", "a positive multiple of 8"),
        ("resolution = 0", "a positive multiple of 8"),
        ("flip_p = 1.5", "between 0 and 1"),
        ("flip_p = -0.1", "between 0 and 1"),
        ("seed = -1", "between 0 and 4294967295"),
        ("seed = 4294967296", "between 0 and 4294967295"),
        ("adam_beta1 = 1.0", "less than 1"),
        ("adam_epsilon = 0", "greater than 0"),
        ("max_grad_norm = -1", "0 or more"),
        ("lr_warmup_steps = -5", "0 or more"),
        ("num_validation_images = 0", "at least 1"),
        ('mixed_precision = "fp32"', '"fp32" is not one of "no", "fp16", "bf16"'),
        ('lr_scheduler = "cosin"', 'did you mean "cosine"?'),
    ],
)
def test_out_of_range_train_values(tmp_path: Path, assignment: str, expected: str) -> None:
    line, message = only_problem(write_project(tmp_path, f"[train]\ncenter_crop = true\n{assignment}\n"))
    assert line == 3
    assert expected in message


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("vectors = 0", "between 1 and 75"),
        ("vectors = 76", "between 1 and 75"),
        ('kind = "objekt"', '"objekt" is not one of "object", "style", "negative"; did you mean "object"?'),
        ('init = "zeros"', 'did you mean "zero"?'),
        ('initializer = ""', "a non-empty string"),
    ],
)
def test_out_of_range_concept_values(tmp_path: Path, assignment: str, expected: str) -> None:
    make_images(tmp_path / "imgs")
    text = f'[concepts.a]\nimages = "imgs"\n{assignment}\n'
    if not assignment.startswith("initializer"):
        text += 'initializer = "toy"\n'
    line, message = only_problem(write_project(tmp_path, text))
    assert line == 3
    assert message.startswith("[concepts.a] ")
    assert expected in message


def test_per_concept_train_values_are_checked(tmp_path: Path) -> None:
    path = write_project(
        tmp_path, '[concepts.a]\nimages = "i"\ninitializer = "x"\n\n[concepts.a.train]\nresolution = 100\n'
    )
    line, message = only_problem(path, check_images=False)
    assert line == 6
    assert message.startswith("[concepts.a.train] resolution:")


def test_every_train_config_field_is_a_key_of_the_train_table() -> None:
    # The trainer hashes and logs every field (to_dict), so each must be a setting the file can change.
    assert tuple(table_settings(TrainConfig)) == TrainConfig.field_names()


# --- required keys and init -------------------------------------------------------------------------------------


def test_missing_images_key_points_at_the_table_header(tmp_path: Path) -> None:
    path = write_project(tmp_path, '[train]\nsteps = 1\n\n[concepts.a]\ninitializer = "x"\n')
    line, message = only_problem(path)
    assert line == 4
    assert 'needs images = "FOLDER"' in message


def test_initializer_required_only_for_init_initializer(tmp_path: Path) -> None:
    make_images(tmp_path / "imgs")
    path = write_project(
        tmp_path, '[concepts.a]\nimages = "imgs"\n\n[concepts.b]\nimages = "imgs"\ninit = "zero"\n'
    )
    line, message = only_problem(path)
    assert line == 1
    assert "[concepts.a] needs an initializer" in message
    path.write_text('[concepts.a]\nimages = "imgs"\ninit = "initializer"\n')
    assert only_problem(path)[0] == 3  # the line of `init`
    path.write_text('[concepts.a]\nimages = "imgs"\ninit = "random"\n')
    concept = load_project(path).concepts["a"]
    assert concept.init == "random" and concept.initializer is None


# --- images -------------------------------------------------------------------------------------------------------


def test_image_folder_problems(tmp_path: Path) -> None:
    make_images(tmp_path / "good")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    (tmp_path / "afile.png").write_bytes(b"")
    broken = make_images(tmp_path / "broken", count=1)
    (broken / "bad.jpg").write_bytes(b"this is not a jpeg")
    path = write_project(
        tmp_path,
        "\n".join(
            f'[concepts.{name}]\ninitializer = "x"\nimages = "{folder}"'
            for name, folder in [
                ("a", "good"),
                ("b", "empty"),
                ("c", "afile.png"),
                ("d", "broken"),
                ("e", "no"),
            ]
        )
        + "\n",
    )
    problems = problems_of(path)
    assert [line for line, _ in problems] == [6, 9, 12, 15]
    assert "holds no images (looked for .bmp, .jpeg, .jpg, .png, .tif, .tiff, .webp)" in problems[0][1]
    assert "is not a folder" in problems[1][1]
    assert f"{broken / 'bad.jpg'}: not a readable image (" in problems[2][1]
    assert "folder does not exist" in problems[3][1]
    # Without the image check the same file is valid.
    assert set(load_project(path, check_images=False).concepts) == {"a", "b", "c", "d", "e"}


def test_list_images_sorted_case_insensitive_and_skips_hidden(tmp_path: Path) -> None:
    from PIL import Image

    for name, fmt in [
        ("b.PNG", "PNG"),
        ("a.jpeg", "JPEG"),
        ("c.webp", "WEBP"),
        ("d.TIFF", "TIFF"),
        (".h.png", "PNG"),
    ]:
        Image.new("RGB", (4, 4)).save(tmp_path / name, format=fmt)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpeg", "b.PNG", "c.webp", "d.TIFF"]
    assert image_problems(tmp_path) == []
    assert ".png" in IMAGE_EXTENSIONS and all(ext == ext.lower() for ext in IMAGE_EXTENSIONS)


def test_list_images_of_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        list_images(tmp_path / "missing")


def test_truncated_image_is_unreadable(tmp_path: Path) -> None:
    folder = make_images(tmp_path / "imgs", count=1)
    data = (folder / "img0.png").read_bytes()
    (folder / "img0.png").write_bytes(data[: len(data) // 2])
    problems = image_problems(folder)
    assert len(problems) == 1
    assert problems[0].startswith(f"{folder / 'img0.png'}: not a readable image (")


# --- tokens and names ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("cat-toy", "must look like <cat-toy>"),
        ("<cat-toy", "must look like <cat-toy>"),
        ("cat-toy>", "must look like <cat-toy>"),
        ("<>", "must look like <cat-toy>"),
        ("", "must look like <cat-toy>"),
        ("<cat toy>", "must not contain spaces"),
        ("<cat\\ttoy>", "must not contain spaces"),
    ],
)
def test_malformed_tokens(tmp_path: Path, token: str, expected: str) -> None:
    make_images(tmp_path / "imgs")
    path = write_project(tmp_path, f'[concepts.a]\nimages = "imgs"\ninitializer = "x"\ntoken = "{token}"\n')
    line, message = only_problem(path)
    assert line == 4
    assert message.startswith("[concepts.a] token ")
    assert expected in message


def test_duplicate_tokens_across_concepts(tmp_path: Path) -> None:
    path = write_project(
        tmp_path,
        '[concepts.a]\nimages = "i"\ninitializer = "x"\n'
        '[concepts.b]\nimages = "i"\ninitializer = "x"\ntoken = "<a>"\n'
        '[concepts.c]\nimages = "i"\ninitializer = "x"\ntoken = "<c>"\n',
    )
    line, message = only_problem(path, check_images=False)
    assert line == 7
    assert '[concepts.b] token "<a>" is already used by concept "a"' in message


def test_default_token_is_the_name_in_angle_brackets(tmp_path: Path) -> None:
    path = write_project(tmp_path, '[concepts."v1.5_x-y"]\nimages = "i"\ninitializer = "x"\n')
    assert load_project(path, check_images=False).concepts["v1.5_x-y"].token == "<v1.5_x-y>"


@pytest.mark.parametrize("name", ["-dash", ".dot", "has space", "a/b", "ünï", ""])
def test_invalid_concept_names(tmp_path: Path, name: str) -> None:
    path = write_project(
        tmp_path, f'[train]\nsteps = 1\n\n[concepts."{name}"]\nimages = "i"\ninitializer = "x"\n'
    )
    line, message = only_problem(path, check_images=False)
    assert line == 4
    assert "is not allowed" in message


def test_a_name_the_registry_would_refuse_is_refused_with_its_line(tmp_path: Path) -> None:
    # The registry (and the Hub) take at most 96 characters; training a longer name would fail at the very end.
    make_images(tmp_path / "imgs")
    longest, too_long = "a" * 96, "a" * 97
    text = '[train]\nsteps = 1\n\n[concepts.{}]\nimages = "imgs"\ninitializer = "x"\n'
    assert longest in load_project(write_project(tmp_path, text.format(longest))).concepts
    line, message = only_problem(write_project(tmp_path, text.format(too_long)))
    assert line == 4
    assert f'concept name "{too_long}" is not allowed' in message and "at most 96 characters" in message


# --- syntax, encoding, positions ------------------------------------------------------------------------------------


def test_toml_syntax_error_has_its_line(tmp_path: Path) -> None:
    path = write_project(tmp_path, '[model]\nbase = "x"\nsteps = = 3\n')
    line, message = only_problem(path)
    assert line == 3
    assert message.startswith("TOML syntax error: ") and "column" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / PROJECT_FILE
    path.write_bytes(b'[model]\nbase = "caf\xe9"\n')
    assert only_problem(path)[0] == 2


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as info:
        load_project(tmp_path / PROJECT_FILE)
    assert "tinv init" in (info.value.hint or "")


def test_lines_skip_multiline_values_and_follow_quoted_and_dotted_keys(tmp_path: Path) -> None:
    path = write_project(
        tmp_path,
        """\
[model]
base = \"\"\"
[train]
steps = 0
\"\"\"
revision = '''a '' b'''

[ concepts . "a" ]
images = "i" # [concepts.b]
initializer = "x"
validation_prompt = "with \\" quote [x]"
concepts_note = [
  "x = 1",
  [2, 3],  # comment [y]
]
train.steps = 0
[concepts.b]
images = "i"
initializer = 'x'
train = { batch_size = 0 }
""",
    )
    # Multi-line strings and arrays hide their "[train]" and "x =" text; a key inside an inline table reports
    # the line of the key that holds the table.
    assert problems_of(path, check_images=False) == [
        (12, 'unknown key "concepts_note" in [concepts.a]'),
        (16, "[concepts.a.train] steps: must be at least 1, found 0"),
        (20, "[concepts.b.train] batch_size: must be at least 1, found 0"),
    ]


# --- find_project ---------------------------------------------------------------------------------------------------


def test_find_project_walks_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TINV_PROJECT", raising=False)
    path = write_project(tmp_path, "")
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    assert find_project(deep) == path
    monkeypatch.chdir(deep)
    assert find_project() == path
    nearer = write_project(tmp_path / "a", "")
    assert find_project(deep) == nearer


def test_find_project_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = write_project(tmp_path, "")
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    chosen = write_project(elsewhere, "")
    monkeypatch.setenv("TINV_PROJECT", str(chosen))
    assert find_project(tmp_path) == chosen
    monkeypatch.setenv("TINV_PROJECT", str(elsewhere))
    assert find_project(tmp_path) == chosen
    monkeypatch.setenv("TINV_PROJECT", str(tmp_path / "missing.toml"))
    with pytest.raises(NotFoundError, match="TINV_PROJECT"):
        find_project(tmp_path)
    monkeypatch.delenv("TINV_PROJECT")
    assert find_project(tmp_path) == here


def test_find_project_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TINV_PROJECT", raising=False)
    with pytest.raises(NotFoundError) as info:
        find_project(tmp_path)
    assert info.value.hint == "run `tinv init` to create one, or pass --project PATH"


# --- initializer_plan ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_tokens", "vectors", "plan"),
    [
        (1, 1, [[0]]),
        (1, 3, [[0], [0], [0]]),
        (3, 1, [[0, 1, 2]]),
        (2, 3, [[0], [1], [0]]),
        (5, 2, [[0, 2, 4], [1, 3]]),
        (4, 4, [[0], [1], [2], [3]]),
    ],
)
def test_initializer_plan(num_tokens: int, vectors: int, plan: list[list[int]]) -> None:
    assert initializer_plan(num_tokens, vectors) == plan


def test_initializer_plan_uses_every_token_and_fills_every_vector() -> None:
    for num_tokens in range(1, 8):
        for vectors in range(1, 8):
            plan = initializer_plan(num_tokens, vectors)
            assert len(plan) == vectors and all(plan)
            assert sorted({j for group in plan for j in group}) == list(range(num_tokens))


def test_initializer_plan_rejects_zero() -> None:
    with pytest.raises(ValueError):
        initializer_plan(0, 1)


# --- check_project ------------------------------------------------------------------------------------------------


def local_model(root: Path) -> Path:
    """A local diffusers-style folder holding only the test tokenizer, saved the way transformers saves one."""
    from transformers import CLIPTokenizer

    model = root / "model"
    CLIPTokenizer.from_pretrained(TOKENIZER_ASSETS).save_pretrained(model / "tokenizer")
    return model


def project_with(path: Path, base: str, *concepts: Concept) -> Project:
    return Project(path=path, model=ModelConfig(base=base), concepts={c.name: c for c in concepts})


def concept(name: str, token: str, initializer: str | None, vectors: int = 1) -> Concept:
    return Concept(name=name, token=token, images=Path("/x"), initializer=initializer, vectors=vectors)


def test_check_project_notes_and_problems(tmp_path: Path) -> None:
    model = local_model(tmp_path)
    path = write_project(
        tmp_path,
        f'[model]\nbase = "{model.as_posix()}"\n\n'
        '[concepts.cat]\ninitializer = "cat toy"\nimages = "i"\nvectors = 3\n\n'
        '[concepts.dog]\ninitializer = "dog"\nimages = "i"\n\n'
        '[concepts.eot]\ninitializer = "dog"\nimages = "i"\ntoken = "<|endoftext|>"\n',
    )
    project = load_project(path, check_images=False)
    with pytest.raises(ProjectError) as info:
        check_project(project)
    assert [(p.line, p.message) for p in info.value.problems] == [
        (16, "[concepts.eot] <|endoftext|> is already a word of the tokenizer; pick another token")
    ]
    fine = project_with(path, str(model), *(c for c in project.concepts.values() if c.name != "eot"))
    notes = check_project(fine)
    assert len(notes) == 1
    assert notes[0].startswith('concept cat: initializer "cat toy" is 2 words; with 3 vectors')
    assert "j % 3 == i" in notes[0]


def test_check_project_unknown_initializer(tmp_path: Path) -> None:
    model = local_model(tmp_path)
    path = write_project(tmp_path, "")
    project = project_with(
        path,
        str(model),
        concept("a", "<a>", " "),
        concept("b", "<b>", "<|endoftext|>"),
        # A word the vocabulary has only in pieces: training would refuse it, so check does too.
        concept("c", "<c>", "toy catdog"),
    )
    with pytest.raises(ProjectError) as info:
        check_project(project)
    messages = [p.message for p in info.value.problems]
    assert len(messages) == 3
    assert "the initializer is empty" in messages[0]
    assert "'<|endoftext|>' is not in the base model's vocabulary" in messages[1]
    assert "'catdog' is not in the base model's vocabulary" in messages[2]


def test_check_project_multi_vector_names_are_checked(tmp_path: Path) -> None:
    from transformers import CLIPTokenizer

    model = tmp_path / "model"
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER_ASSETS)
    tokenizer.add_tokens(["<old>_1"])
    tokenizer.save_pretrained(model / "tokenizer")
    project = project_with(tmp_path / PROJECT_FILE, str(model), concept("old", "<old>", "dog", vectors=2))
    with pytest.raises(ProjectError, match="<old>_1 is already a word"):
        check_project(project)
    assert check_project(project_with(project.path, str(model), concept("old", "<old>", "dog"))) == []


def test_check_project_without_tokenizer_is_skipped(tmp_path: Path) -> None:
    empty_model = tmp_path / "empty-model"
    (empty_model / "tokenizer").mkdir(parents=True)
    for base in [str(empty_model), "org/not-downloaded"]:
        project = project_with(tmp_path / PROJECT_FILE, base, concept("a", "<|endoftext|>", " "))
        assert check_project(project) == [f"tokenizer of {base} not available locally; token checks skipped"]
    # A built-in model that does not exist is a mistake to report, not a tokenizer to skip.
    unknown = project_with(tmp_path / PROJECT_FILE, "builtin:tiny", concept("a", "<a>", "dog"))
    with pytest.raises(NotFoundError, match="no built-in model 'tiny'"):
        check_project(unknown)


def test_check_refuses_a_base_model_path_that_does_not_exist(tmp_path: Path) -> None:
    make_images(tmp_path / "i")
    path = write_project(
        tmp_path,
        '# a project\n[model]\nbase = "./models/not-there"\n\n[concepts.a]\ninitializer = "dog"\nimages = "i"\n',
    )
    with pytest.raises(ProjectError) as caught:
        check_project(load_project(path))
    assert [(p.line, p.message) for p in caught.value.problems] == [
        (3, f"[model] base: {tmp_path / 'models' / 'not-there'} does not exist")
    ]


def test_a_utf8_byte_order_mark_is_not_a_syntax_error(tmp_path: Path) -> None:
    make_images(tmp_path / "i")
    path = tmp_path / PROJECT_FILE
    path.write_bytes(b"\xef\xbb\xbf" + b'[concepts.a]\ninitializer = "dog"\nimages = "i"\n')
    assert list(load_project(path).concepts) == ["a"]


def test_check_project_finds_a_tokenizer_in_the_hf_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    repo = cache / "models--org--tiny"
    commit = "0" * 40
    shutil.copytree(TOKENIZER_ASSETS, repo / "snapshots" / commit / "tokenizer")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    # huggingface_hub reads its cache location when imported; point it at this test's cache.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    project = project_with(tmp_path / PROJECT_FILE, "org/tiny", concept("a", "<a>", "painting"))
    assert check_project(project) == []
    bad = project_with(tmp_path / PROJECT_FILE, "org/tiny", concept("a", "<|startoftext|>", "painting"))
    with pytest.raises(ProjectError, match="already a word"):
        check_project(bad)

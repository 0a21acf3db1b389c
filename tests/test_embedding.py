"""Token rules of an Embedding: what can name a concept in a file, the registry and a prompt."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tinv_cli.embedding import Embedding, check_token
from tinv_cli.errors import FormatError, ProjectError
from tinv_cli.project.load import PROJECT_FILE, load_project


@pytest.mark.parametrize(
    ("token", "code"),
    [("<cat\x1btoy>", "001B"), ("<cat\x00>", "0000"), ("<cat\u202etoy>", "202E"), ("\ufeff<cat>", "FEFF")],
)
def test_control_and_invisible_characters_are_refused(tmp_path: Path, token: str, code: str) -> None:
    assert check_token(token) == f"token {token!r} contains the invisible or control character U+{code}"
    with pytest.raises(FormatError, match=f"U\\+{code}"):
        Embedding(token, (torch.zeros(1, 4),))
    (tmp_path / "i").mkdir()
    escaped = "".join(c if c.isprintable() and c.isascii() else f"\\u{ord(c):04X}" for c in token)
    (tmp_path / PROJECT_FILE).write_text(
        f'[concepts.a]\ntoken = "{escaped}"\ninitializer = "dog"\nimages = "i"\n', encoding="utf-8"
    )
    with pytest.raises(ProjectError) as caught:
        load_project(tmp_path / PROJECT_FILE, check_images=False)
    # A leading BOM already fails the <...> shape; every other token names the character.
    expected = "must look like <cat-toy>" if token.startswith("\ufeff") else f"U+{code}"
    assert [(p.line, expected in p.message) for p in caught.value.problems] == [(2, True)]


def test_ordinary_unicode_tokens_are_fine() -> None:
    assert check_token("<katze-spielzeug>") is None
    assert check_token("<猫のおもちゃ>") is None
    assert check_token("<chat-é>") is None

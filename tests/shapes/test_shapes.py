"""The shapes world, its tokenizer and judge, and builtin:shapes resolving wherever tinv takes a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinv_cli import shapes
from tinv_cli.errors import NotFoundError, ProjectError
from tinv_cli.models import configs, loading, refs
from tinv_cli.shapes import world
from tinv_cli.shapes.clip_bpe import WORD_RE

SHIPPED = Path(shapes.__file__).resolve().parent / "model"


def _pixels(image: object) -> bytes:
    return image.tobytes()  # type: ignore[attr-defined]


def test_scenes_are_a_pure_function_of_seed_and_index() -> None:
    first = [_pixels(image) for image in world.images(7, 6)]
    # Drawing other scenes in between, or starting elsewhere, changes nothing.
    world.images(8, 3)
    assert [_pixels(image) for image in world.images(7, 3, start=3)] == first[3:]
    assert [_pixels(image) for image in world.images(7, 6)] == first
    assert first != [_pixels(image) for image in world.images(8, 6)]
    assert world.caption(world.scene(7, 2), 7, 2) == world.caption(world.scene(7, 2), 7, 2)


def test_fixed_attributes_keep_the_rest_random() -> None:
    scenes = [world.scene(3, i, colour="purple", shape="diamond") for i in range(20)]
    assert {(s.colour, s.shape) for s in scenes} == {("purple", "diamond")}
    assert len({(round(s.x, 3), round(s.y, 3)) for s in scenes}) == 20
    assert {s.background for s in scenes} == set(world.BACKGROUNDS)


def test_the_world_has_at_least_five_shapes_and_six_colours() -> None:
    assert len(world.SHAPES) >= 5 and len(world.COLOURS) >= 6
    image = world.render(world.scene(0, 0))
    assert image.size == (world.SIZE, world.SIZE) and image.mode == "RGB"


def test_every_caption_word_is_one_token_of_the_shipped_tokenizer() -> None:
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(SHIPPED / "tokenizer"))
    for word in world.vocabulary():
        assert len(tokenizer.tokenize(word)) == 1, word
    for i in range(200):
        text = world.caption(world.scene(0, i), 0, i)
        ids = tokenizer(text).input_ids
        assert len(ids) == len(WORD_RE.findall(text)) + 2, text
        assert len(ids) <= tokenizer.model_max_length


def test_judge_reads_held_out_scenes() -> None:
    from tinv_cli.shapes.judge import load_judge

    judge = load_judge(SHIPPED / "judge")
    scenes = [world.scene(12345, i) for i in range(300)]
    verdicts = judge.classify([world.render(s) for s in scenes])
    right = sum(v.colour == s.colour and v.shape == s.shape for v, s in zip(verdicts, scenes, strict=True))
    assert right / len(scenes) >= 0.98
    # The figure shipped with the judge is the one measured at build time on a seed it never saw.
    assert judge.info["held_out"]["accuracy"]["colour+shape"] >= 0.98


def test_builtin_shapes_resolves_to_the_shipped_folder() -> None:
    assert refs.builtin_folder("builtin:shapes") == SHIPPED
    assert refs.builtin_folder("stable-diffusion-v1-5/stable-diffusion-v1-5") is None
    assert refs.check_model_ref("builtin:shapes") == SHIPPED
    assert refs.model_label("builtin:shapes") == "builtin:shapes"
    assert configs.model_widths_from_config("builtin:shapes") == (64,)
    with pytest.raises(NotFoundError, match="no built-in model 'nope'") as info:
        refs.check_model_ref("builtin:nope")
    assert "builtin:shapes" in (info.value.hint or "")


def test_shipped_model_is_small_and_in_diffusers_layout() -> None:
    index = json.loads((SHIPPED / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    size = sum(path.stat().st_size for path in SHIPPED.rglob("*") if path.is_file())
    assert size <= 20 * 2**20
    assert not list(SHIPPED.rglob("*.bin")) and list(SHIPPED.rglob("*.safetensors"))


def test_load_pipeline_and_project_check_find_builtin_shapes(tmp_path: Path) -> None:
    from tinv_cli.project.load import load_project
    from tinv_cli.project.tokens import check_project

    pipe = loading.load_pipeline("builtin:shapes")
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == world.SIZE
    (tmp_path / "img").mkdir()
    world.render(world.scene(0, 0)).save(tmp_path / "img" / "a.png")
    (tmp_path / "concepts.toml").write_text(
        '[model]\nbase = "builtin:shapes"\n\n'
        '[concepts.kite]\nimages = "img"\ninitializer = "diamond"\n\n'
        '[concepts.bad]\nimages = "img"\ninitializer = "hexagon"\n'
    )
    project = load_project(tmp_path / "concepts.toml")
    # The check reads the shipped tokenizer: "diamond" is one of its words, "hexagon" is not.
    with pytest.raises(
        ProjectError, match="initializer word 'hexagon' is not in the base model's vocabulary"
    ):
        check_project(project)

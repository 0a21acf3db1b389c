"""Base models: reading text-encoder widths without weights, loading pipelines, and the Hub's failures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.hubserver import LocalHub
from tinv_cli.errors import ModelError, NotFoundError
from tinv_cli.hub import errors
from tinv_cli.models import configs, loading, refs

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def encoder_config(width: int, *, nested: bool = False) -> dict[str, object]:
    config = {"hidden_size": width, "num_hidden_layers": 2}
    return {"text_config": config} if nested else config


def fake_cache_model(cache: Path, repo_id: str, files: dict[str, dict[str, object]]) -> None:
    """The HF cache layout (models--org--name/refs/main -> snapshots/<commit>/...) holding only JSON files."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for name, data in files.items():
        path = repo / "snapshots" / COMMIT / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))


SDXL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "unet": ["diffusers", "UNet2DConditionModel"],
}


def test_widths_of_a_local_folder(tiny_model_dir: Path) -> None:
    assert configs.model_widths_from_config(str(tiny_model_dir)) == (32,)


def test_widths_need_only_the_config_files(tmp_path: Path) -> None:
    folder = tmp_path / "sdxl-configs-only"
    (folder / "text_encoder").mkdir(parents=True)
    (folder / "text_encoder_2").mkdir()
    (folder / "model_index.json").write_text(json.dumps(SDXL_INDEX))
    (folder / "text_encoder" / "config.json").write_text(json.dumps(encoder_config(768)))
    (folder / "text_encoder_2" / "config.json").write_text(json.dumps(encoder_config(1280, nested=True)))
    assert configs.model_widths_from_config(str(folder)) == (768, 1280)
    (folder / "text_encoder_2" / "config.json").unlink()
    assert configs.model_widths_from_config(str(folder)) is None


def test_widths_from_the_hf_cache_without_network(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    fake_cache_model(
        cache,
        "org/sd2",
        {
            "model_index.json": {
                "_class_name": "StableDiffusionPipeline",
                "text_encoder": ["transformers", "X"],
            },
            "text_encoder/config.json": encoder_config(1024),
        },
    )
    assert configs.model_widths_from_config("org/sd2", cache_dir=cache) == (1024,)
    assert configs.model_widths_from_config("org/sd2", "main", cache_dir=cache) == (1024,)
    assert configs.model_widths_from_config("org/not-downloaded", cache_dir=cache) is None
    assert configs.model_widths_from_config("not a repo id!", cache_dir=cache) is None


def test_model_refs_that_cannot_work(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"model folder \./missing/model does not exist"):
        refs.check_model_ref("./missing/model")
    with pytest.raises(ModelError, match="neither a folder nor a Hugging Face Hub model id"):
        refs.check_model_ref("two words")
    (tmp_path / "not-a-pipeline").mkdir()
    with pytest.raises(ModelError, match="not a diffusers pipeline folder"):
        refs.check_model_ref(str(tmp_path / "not-a-pipeline"))
    assert refs.check_model_ref("org/model") is None


def test_load_a_local_folder(tiny_model_dir: Path) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = loading.load_pipeline(str(tiny_model_dir), torch_dtype=torch.float32, device="cpu")
    assert isinstance(pipe, StableDiffusionPipeline)
    assert pipe.safety_checker is None
    assert pipe.text_encoder.dtype == torch.float32
    assert refs.model_label(str(tiny_model_dir)) == tiny_model_dir.name


def test_offline_and_not_cached_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    # The constants are read when huggingface_hub is imported; set them as HF_HUB_OFFLINE=1 would have.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelError) as caught:
        loading.load_pipeline("org/never-downloaded")
    assert caught.value.message == (
        "org/never-downloaded is not in the Hugging Face cache and HF_HUB_OFFLINE is set, so it cannot be downloaded"
    )
    assert "unset HF_HUB_OFFLINE" in (caught.value.hint or "")
    assert "--model" in (caught.value.hint or "")


def test_device_and_dtype() -> None:
    import torch

    assert loading.pick_device("cpu") == "cpu"
    assert loading.pick_device("auto") in ("cuda", "mps", "cpu")
    assert loading.pick_dtype("auto", "cpu") == torch.float32
    assert loading.pick_dtype("auto", "cuda") == torch.float16
    assert loading.pick_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(ModelError, match="unknown dtype"):
        loading.pick_dtype("fp8", "cpu")
    with pytest.raises(ModelError, match="unknown device"):
        loading.pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="device cuda is not available"):
            loading.pick_device("cuda")


# The Hub's answers, from a local Hub-protocol server and the real client in a fresh process (huggingface_hub
# reads HF_ENDPOINT and HF_HUB_OFFLINE once, at import).
PROBE = textwrap.dedent(
    """
    import json, sys
    from huggingface_hub import constants
    from tinv_cli.hub import errors
    from tinv_cli.models import configs
    from tinv_cli.models import loading
    from tinv_cli.models import refs
    from tinv_cli.errors import TinvError

    results = {}
    for label, ref, revision in json.loads(sys.argv[1]):
        if label == "offline":
            constants.HF_HUB_OFFLINE = True
        try:
            pipe = loading.load_pipeline(ref, revision=revision)
            results[label] = ["loaded", type(pipe).__name__, configs.model_widths_from_config(ref, revision)]
        except TinvError as error:
            results[label] = [error.message, error.hint]
    print("RESULT=" + json.dumps(results))
    """
)


def probe(hub_endpoint: str, hf_home: Path, calls: list[tuple[str, str, str | None]]) -> dict[str, list]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub_endpoint, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1")
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(calls)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=240,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT=")]
    assert lines, done.stderr[-3000:]
    return json.loads(lines[0].removeprefix("RESULT="))


@pytest.mark.slow
def test_hub_download_gated_missing_and_offline(tiny_model_dir: Path, tmp_path: Path) -> None:
    files = {
        path.relative_to(tiny_model_dir).as_posix(): path.read_bytes()
        for path in tiny_model_dir.rglob("*")
        if path.is_file()
    }
    with LocalHub() as hub:
        hub.create_repo("org/sd-tiny")
        hub.commit("org/sd-tiny", files)
        hub.create_repo("org/licensed", gated=True)
        hub.commit("org/licensed", files)
        results = probe(
            hub.endpoint,
            tmp_path / "hf",
            [
                ("gated", "org/licensed", None),
                ("missing", "org/no-such-model", None),
                ("bad-revision", "org/sd-tiny", "no-such-branch"),
                ("download", "org/sd-tiny", None),
                ("offline", "org/sd-tiny", None),  # the download above is now in the cache
            ],
        )
    gated_message, gated_hint = results["gated"]
    assert (
        gated_message
        == "org/licensed is a gated model and this Hugging Face account has not been granted access"
    )
    assert "https://huggingface.co/org/licensed" in gated_hint and "hf auth login" in gated_hint
    assert results["missing"][0].startswith("no model 'org/no-such-model' on the Hugging Face Hub")
    assert "hf auth login" in results["missing"][1]
    assert results["bad-revision"][0] == "org/sd-tiny has no revision 'no-such-branch'"
    assert results["download"] == ["loaded", "StableDiffusionPipeline", [32]]
    assert results["offline"] == ["loaded", "StableDiffusionPipeline", [32]]


def test_network_down_and_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    # What huggingface_hub raises when the connection fails and the file is not cached. (A real refused
    # connection costs about 25 s of the client's own retries, too slow for a unit test.)
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    # Online, as a user whose network is down is: the suite's HF_HUB_OFFLINE=1 reaches huggingface_hub's
    # constants only when it is first imported after the fixture set it, so the test says which it is about.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as refused:
            raise LocalEntryNotFoundError(
                "An error happened while trying to locate the file on the Hub"
            ) from refused
    except LocalEntryNotFoundError as raised:
        error = errors.model_download_error("org/other", None, raised)
    assert error is not None
    assert (
        error.message
        == "could not reach the Hugging Face Hub to download org/other, and it is not in the cache"
    )
    assert "network" in (error.hint or "")
    assert errors.model_download_error("org/other", None, ValueError("not a Hub problem")) is None


def test_a_local_copy_without_weights_is_refused_by_diffusers_not_by_tinv(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # A folder that is not a Hub download keeps diffusers' own error: it is not a Hub problem to explain.
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    for weights in broken.rglob("*.safetensors"):
        weights.unlink()
    with pytest.raises(OSError):
        loading.load_pipeline(str(broken))

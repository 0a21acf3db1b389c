"""`tinv push`, `pull` and `search` over HTTP against the local Hub (tests/hubserver.py).

tinv runs in a subprocess, as a user runs it: huggingface_hub reads HF_ENDPOINT, HF_HUB_OFFLINE and HF_HOME
once, when it is imported, so each command must start in a fresh interpreter for the environment a test sets
to apply. The registry and the Hub's contents are then checked in-process.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.hubserver import LocalHub

if TYPE_CHECKING:
    import torch

    from tinv_cli.registry.entry import Entry
    from tinv_cli.registry.store import Registry
    from tinv_cli.sampling.sample import SampleResult

ALICE = "hf_aliceSecretToken0001"
BOB = "hf_bobSecretToken0002"
TOKENS = (ALICE, BOB)
CONCEPT_FILES = {
    "learned_embeds.safetensors",
    "learned_embeds.bin",
    "token_identifier.txt",
    "type_of_concept.txt",
    "README.md",
}


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[LocalHub]:
    """A running local Hub with users alice and bob; HF_ENDPOINT points at it, online, with a fresh cache."""
    with LocalHub() as server:
        server.add_user("alice", ALICE)
        server.add_user("bob", BOB, orgs=("bobs-org",))
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        for name in (
            "HF_TOKEN",
            "HF_HUB_CACHE",
            "HUGGINGFACE_HUB_CACHE",
            "HF_TOKEN_PATH",
            "TRANSFORMERS_OFFLINE",
            "TINV_PROJECT",
        ):
            monkeypatch.delenv(name, raising=False)
        # Commands run where no concepts.toml is found, so no project's [hub] settings apply by accident.
        work = tmp_path / "work"
        work.mkdir()
        monkeypatch.chdir(work)
        yield server


def tinv(*args: str, input: str | None = None, **env: str) -> Run:
    """Run ``python -m tinv_cli ARGS`` with the test's environment plus ``env``; no token may reach the output."""
    result = subprocess.run(
        [sys.executable, "-m", "tinv_cli", *args],
        env={**os.environ, **env},
        input=input or "",
        capture_output=True,
        text=True,
        timeout=120,
    )
    for secret in TOKENS:
        assert secret not in result.stdout + result.stderr
    return Run(result.returncode, result.stdout, result.stderr)


@dataclass(frozen=True)
class Call:
    args: tuple[str, ...]
    input: str | None
    env: dict[str, str]


def cmd(*args: str, input: str | None = None, **env: str) -> Call:
    return Call(args, input, env)


def tinv_all(*calls: Call) -> list[Run]:
    """Independent commands run side by side (each is its own process), to keep the test time down."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda call: tinv(*call.args, input=call.input, **call.env), calls))


def _tensor(rows: int, seed: int, width: int = 32) -> torch.Tensor:
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, width, generator=generator)


def _jpeg(color: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, format="JPEG")
    return buffer.getvalue()


def _torch_bytes(obj: object) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _registry(home: Path) -> Registry:
    from tinv_cli.registry.store import Registry

    return Registry(home)


def _add_entry(name: str, token: str, kind: str, tmp_path: Path) -> Entry:
    from tinv_cli.embedding import Embedding

    images = []
    for i, color in enumerate([(200, 30, 30), (30, 200, 30)]):
        image = tmp_path / f"{i}.jpeg"
        image.write_bytes(_jpeg(color))
        images.append(image)
    # What a trained entry keeps beside the concept, and push must leave out.
    log = tmp_path / "train.jsonl"
    log.write_text('{"step": 1, "loss": 0.1}\n')
    return _registry(Path(os.environ["TINV_HOME"])).add(
        name,
        Embedding(token, (_tensor(1, 7),)),
        kind=kind,
        source={"type": "imported"},
        images=images,
        extra_files={"checkpoints/step-500.safetensors": log, "logs/train.jsonl": log},
    )


def _sample(home: Path, prompt: str, model_dir: Path) -> SampleResult:
    from tinv_cli.sampling.sample import generate

    return generate(prompt, registry=_registry(home), model=str(model_dir), steps=2, seed=3, device="cpu")


def _free_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.slow
def test_private_push_then_pull_round_trip(hub: LocalHub, tmp_path: Path, tiny_model_dir: Path) -> None:
    import torch

    entry = _add_entry("glass-style", "<glass-style>", "style", tmp_path)

    pushed = tinv("push", "glass-style", "--private", "--message", "first upload", HF_TOKEN=ALICE)
    assert pushed.code == 0, pushed.err
    repo = "alice/glass-style"
    assert hub.is_private(repo)
    commit = hub.head(repo)
    assert f"url     {hub.endpoint}/{repo}" in pushed.out
    assert f"commit  {commit}" in pushed.out

    files = hub.files(repo)
    expected = CONCEPT_FILES | {"concept_images/0.jpeg", "concept_images/1.jpeg"}
    assert set(files) == expected | {".gitattributes"}  # no tinv.json, checkpoints or logs
    for name in expected:
        if name != "README.md":
            assert files[name] == (entry.path / name).read_bytes(), name
    # The concepts library's own loaders expect a 1-D tensor for a one-vector concept.
    stored = torch.load(io.BytesIO(files["learned_embeds.bin"]), weights_only=True)
    assert list(stored) == ["<glass-style>"] and stored["<glass-style>"].shape == (32,)
    card = files["README.md"].decode()
    front = card.split("---")[1]
    assert "license: mit" in front and "- textual_inversion" in front and "- stable-diffusion" in front
    assert f"tinv pull {repo}" in card and f'load_textual_inversion("{repo}")' in card
    assert "![0](concept_images/0.jpeg)" in card

    info = json.loads((entry.path / "tinv.json").read_text())
    assert info["hub"] == {"repo": repo, "revision": commit, "url": f"{hub.endpoint}/{repo}"}

    commits = hub.commit_count(repo)
    again = tinv("push", "glass-style", HF_TOKEN=ALICE)
    assert again.code == 0, again.err
    assert f"already up to date at {commit}" in again.err
    assert hub.commit_count(repo) == commits

    # Private: without the owner's token the repository does not exist, and nothing is added.
    fresh = tmp_path / "fresh-home"
    anonymous, stranger, bad = tinv_all(
        cmd("pull", repo, TINV_HOME=str(fresh)),
        cmd("pull", repo, "--token", BOB, TINV_HOME=str(fresh)),
        cmd("pull", repo, TINV_HOME=str(fresh), HF_TOKEN="hf_notAValidToken99"),
    )
    assert anonymous.code == 1
    assert anonymous.err.count("Error:") == 1 and "Traceback" not in anonymous.err
    assert f"repository {repo} not found" in anonymous.err
    assert "log in with `hf auth login`, set HF_TOKEN or pass --token" in anonymous.err
    assert stranger.code == 1 and "not found" in stranger.err
    assert bad.code == 1 and "the Hub refused the token" in bad.err
    assert not (fresh / "registry").exists()

    pulled = tinv("pull", repo, "--token", ALICE, TINV_HOME=str(fresh))
    assert pulled.code == 0, pulled.err
    assert pulled.out.strip() == "glass-style@1"
    got = _registry(fresh).get("glass-style")
    assert (got.path / "learned_embeds.safetensors").read_bytes() == entry.embedding_file().read_bytes()
    assert got.sha256 == entry.sha256
    assert got.token == "<glass-style>" and got.kind == "style"
    assert got.embedding().equal(entry.embedding())
    assert sorted(p.name for p in (got.path / "concept_images").iterdir()) == ["0.jpeg", "1.jpeg"]
    assert got.info["source"]["type"] == "pulled"
    assert {k: got.info["source"][k] for k in ("repo", "revision", "path")} == {
        "repo": repo,
        "revision": commit,
        "path": None,
    }
    assert got.info["hub"]["revision"] == commit

    # Re-shared by someone else (logged in with `hf auth login`, which saves the token in HF_HOME), the card
    # still says where the concept came from.
    bob_home = tmp_path / "bob-hf-home"
    bob_home.mkdir()
    (bob_home / "token").write_text(BOB)
    reshared = tinv("push", "glass-style", TINV_HOME=str(fresh), HF_HOME=str(bob_home))
    assert reshared.code == 0, reshared.err
    assert (
        f"Pulled from the Hugging Face Hub repository `{repo}`"
        in hub.files("bob/glass-style")["README.md"].decode()
    )

    result = _sample(fresh, "a castle in the style of <glass-style>", tiny_model_dir)
    assert [c.entry.ref for c in result.concepts] == ["glass-style@1"]
    assert len(result.images) == 1 and result.images[0].size[0] > 0


def _concepts_library_repo(
    hub: LocalHub, repo: str, token: str, vector: torch.Tensor, *, gated: bool = False
) -> str:
    """A repository laid out exactly like sd-concepts-library's: a 1-D tensor in learned_embeds.bin."""
    hub.create_repo(repo, gated=gated)
    return hub.commit(
        repo,
        {
            "learned_embeds.bin": _torch_bytes({token: vector}),
            "token_identifier.txt": token.encode(),
            "type_of_concept.txt": b"object",
            "concept_images/0.jpeg": _jpeg((250, 120, 0)),
            "concept_images/1.jpeg": _jpeg((0, 120, 250)),
            "README.md": b"---\nlicense: mit\n---\n### Cat toy on Stable Diffusion\nThis is the `<cat-toy>` concept"
            b" taught to Stable Diffusion via Textual Inversion.\n",
        },
        message="Upload concept",
    )


@pytest.mark.slow
def test_concepts_library_repo_found_by_search_pulls_samples_and_is_served_offline(
    hub: LocalHub, tmp_path: Path, tiny_model_dir: Path
) -> None:
    vector = _tensor(1, 11)[0]
    commit = _concepts_library_repo(hub, "sd-concepts-library/cat-toy", "<cat-toy>", vector)
    _concepts_library_repo(hub, "sd-concepts-library/dog-toy", "<dog-toy>", _tensor(1, 4)[0])
    _concepts_library_repo(hub, "someone/cat-statue", "<cat-statue>", _tensor(1, 5)[0])
    home = Path(os.environ["TINV_HOME"])

    found, everyone, declined = tinv_all(
        cmd("search", "cat"),
        cmd("search", "cat", "--any-author", "--json"),
        cmd("pull", "--search", "toy", input="n\n"),
    )
    assert found.code == 0, found.err
    assert "sd-concepts-library/cat-toy" in found.out
    assert "cat-statue" not in found.out and "dog-toy" not in found.out
    assert [hit["repo"] for hit in json.loads(everyone.out)] == [
        "sd-concepts-library/cat-toy",
        "someone/cat-statue",
    ]

    assert declined.code == 0
    assert "sd-concepts-library/dog-toy" in declined.out and "Nothing pulled." in declined.err
    assert not (home / "registry").exists()

    pulled = tinv("pull", "--search", "cat-toy", input="y\n")
    assert pulled.code == 0, pulled.err
    entry = _registry(home).get("cat-toy")
    assert entry.token == "<cat-toy>" and entry.kind == "object" and entry.num_vectors == 1
    assert entry.info["images"] == 2
    assert entry.info["source"]["revision"] == commit
    assert bool((entry.embedding().vectors[0][0] == vector).all())
    # Only the concept's files were fetched: never the README or anything else of the repository.
    fetched = {
        path.rsplit("/", 1)[-1] for method, path, _ in hub.requests if method == "GET" and "/resolve/" in path
    }
    assert fetched == {
        "learned_embeds.bin",
        "token_identifier.txt",
        "type_of_concept.txt",
        "0.jpeg",
        "1.jpeg",
    }

    result = _sample(home, "a <cat-toy> on a beach", tiny_model_dir)
    assert [c.entry.ref for c in result.concepts] == ["cat-toy@1"]
    assert len(result.images) == 1

    # Offline, from the Hugging Face cache alone: not one request reaches the Hub.
    before = len(hub.requests)
    offline_home = tmp_path / "offline-home"
    offline, missing = tinv_all(
        cmd(
            "pull",
            "sd-concepts-library/cat-toy",
            "--name",
            "offline-cat",
            TINV_HOME=str(offline_home),
            HF_HUB_OFFLINE="1",
        ),
        cmd("pull", "sd-concepts-library/dog-toy", TINV_HOME=str(offline_home), HF_HUB_OFFLINE="1"),
    )
    assert offline.code == 0, offline.err
    assert len(hub.requests) == before
    again = _registry(offline_home).get("offline-cat")
    assert again.sha256 == entry.sha256 and again.info["source"]["revision"] == commit

    # Offline and never pulled: a clear error, nothing added.
    assert missing.code == 1
    assert (
        "HF_HUB_OFFLINE is set and sd-concepts-library/dog-toy is not in the Hugging Face cache"
        in missing.err
    )
    assert [e.name for e in _registry(offline_home).list()] == ["offline-cat"]


@pytest.mark.slow
def test_gated_repo_foreign_namespace_and_public_target_are_refused(hub: LocalHub, tmp_path: Path) -> None:
    _concepts_library_repo(hub, "bobs-org/gated-toy", "<gated-toy>", _tensor(1, 2)[0], gated=True)

    _add_entry("cat-toy", "<cat-toy>", "object", tmp_path)
    hub.create_repo("alice/open")
    project = tmp_path / "concepts.toml"
    project.write_text('[hub]\nnamespace = "bobs-org"\nprivate = true\n')
    anonymous, not_granted, foreign, no_token, public, by_project = tinv_all(
        cmd("pull", "bobs-org/gated-toy"),
        cmd("pull", "bobs-org/gated-toy", HF_TOKEN=ALICE),
        cmd("push", "cat-toy", "--repo", "bobs-org/alices-toy", HF_TOKEN=ALICE),
        cmd("push", "cat-toy"),
        cmd("push", "cat-toy", "--private", "--repo", "alice/open", HF_TOKEN=ALICE),
        cmd("push", "cat-toy", HF_TOKEN=BOB, TINV_PROJECT=str(project)),
    )
    assert anonymous.code == 1 and "bobs-org/gated-toy is gated" in anonymous.err
    assert not_granted.code == 1 and "is gated" in not_granted.err
    assert foreign.code == 1 and "403 forbidden" in foreign.err
    assert not hub.has_repo("bobs-org/alices-toy")
    assert no_token.code == 1 and "pushing needs a Hugging Face token" in no_token.err
    # A public repository is never made the target of a --private push.
    assert public.code == 1 and "already exists and is public" in public.err
    assert set(hub.files("alice/open")) == {".gitattributes"}
    # The project file's [hub] namespace and private setting choose where a push goes.
    assert by_project.code == 0, by_project.err
    assert hub.is_private("bobs-org/cat-toy") and "learned_embeds.bin" in hub.files("bobs-org/cat-toy")
    assert _registry(Path(os.environ["TINV_HOME"])).get("cat-toy").info["hub"]["repo"] == "bobs-org/cat-toy"


class _Payload:
    """Unpickling this runs os.mkdir(marker): what a malicious learned_embeds.bin would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


@pytest.mark.slow
def test_malicious_learned_embeds_bin_is_refused(hub: LocalHub, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hub.create_repo("mallory/evil-toy")
    hub.commit(
        "mallory/evil-toy",
        {
            "learned_embeds.bin": _torch_bytes({"<evil-toy>": _Payload(marker)}),
            "token_identifier.txt": b"<evil-toy>",
            "type_of_concept.txt": b"object",
        },
    )
    pulled = tinv("pull", "mallory/evil-toy")
    assert pulled.code == 1
    assert "refused" in pulled.err and "tinv never executes such files" in pulled.err
    assert not marker.exists()
    assert not (Path(os.environ["TINV_HOME"]) / "registry").exists()


@pytest.mark.slow
def test_one_file_at_a_revision_and_a_diffusers_repo_in_one_pull(hub: LocalHub) -> None:
    from safetensors.torch import save

    repo = "someone/embeddings"
    hub.create_repo(repo)

    def a1111(rows: int, seed: int) -> bytes:
        return _torch_bytes(
            {"string_to_param": {"*": _tensor(rows, seed)}, "name": "charturner", "step": 500}
        )

    first = hub.commit(repo, {"embeddings/charturner.pt": a1111(2, 1), "model.safetensors": b"\0" * 4096})
    hub.commit(repo, {"embeddings/charturner.pt": a1111(3, 2)})
    # What the diffusers textual_inversion.py example pushes: the final vectors plus step checkpoints and logs.
    hub.create_repo("someone/diffusers-ti")
    hub.commit(
        "someone/diffusers-ti",
        {
            "learned_embeds.safetensors": save({"<ti-cat>": _tensor(1, 9)}),
            "learned_embeds-steps-500.safetensors": save({"<ti-cat>": _tensor(1, 8)}),
            "logs/textual_inversion/events.out.tfevents": b"log",
            "README.md": b"---\nlicense: creativeml-openrail-m\n---\n# ti-cat\n",
        },
    )

    pulled = tinv("pull", f"{repo}@{first}:embeddings/charturner.pt", "someone/diffusers-ti")
    assert pulled.code == 0, pulled.err
    assert pulled.out.split() == ["charturner@1", "ti-cat@1"]
    registry = _registry(Path(os.environ["TINV_HOME"]))
    entry = registry.get("charturner")
    assert entry.num_vectors == 2  # the first commit's file, not main's
    source = entry.info["source"]
    assert (source["repo"], source["revision"], source["path"], source["format"]) == (
        repo,
        first,
        "embeddings/charturner.pt",
        "a1111",
    )
    ti = registry.get("ti-cat")
    assert ti.token == "<ti-cat>" and ti.info["source"]["repo"] == "someone/diffusers-ti"
    assert bool((ti.embedding().vectors[0] == _tensor(1, 9)).all())
    fetched = [path for method, path, _ in hub.requests if method == "GET" and "/resolve/" in path]
    assert sorted(path.rsplit("/", 1)[-1] for path in fetched) == [
        "charturner.pt",
        "learned_embeds.safetensors",
    ]


def test_repo_without_an_embedding_or_with_an_unknown_file(hub: LocalHub) -> None:
    repo = "someone/not-a-concept"
    hub.create_repo(repo)
    hub.commit(repo, {"README.md": b"# notes\n", "weights/odd.pt": b"these are not tensors\n"})

    nothing, odd, missing = tinv_all(
        cmd("pull", repo), cmd("pull", f"{repo}:weights/odd.pt"), cmd("pull", "someone/does-not-exist")
    )
    assert nothing.code == 1
    assert f"no embedding in {repo}" in nothing.err
    assert f"tinv pull {repo}:weights/odd.pt" in nothing.err
    assert odd.code == 1
    assert "odd.pt is neither a safetensors file nor a PyTorch pickle" in odd.err
    assert odd.err.count("Error:") == 1 and "Traceback" not in odd.err
    assert missing.code == 1 and "repository someone/does-not-exist not found" in missing.err
    assert not (Path(os.environ["TINV_HOME"]) / "registry").exists()


def test_network_down(hub: LocalHub) -> None:
    down = tinv("pull", "sd-concepts-library/cat-toy", HF_ENDPOINT=_free_port_url())
    assert down.code == 1
    assert "cannot reach the Hub at http://127.0.0.1:" in down.err
    assert "check your connection" in down.err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sd-concepts-library/cat-toy", ("sd-concepts-library/cat-toy", None, None)),
        ("sd-concepts-library/cat-toy@v2", ("sd-concepts-library/cat-toy", "v2", None)),
        ("someone/embeds@main:sdxl/clip.safetensors", ("someone/embeds", "main", "sdxl/clip.safetensors")),
        ("someone/embeds:a1111/char turner.pt", ("someone/embeds", None, "a1111/char turner.pt")),
        ("https://huggingface.co/sd-concepts-library/cat-toy", ("sd-concepts-library/cat-toy", None, None)),
        ("https://huggingface.co/someone/embeds/blob/main/x.pt", ("someone/embeds", "main", "x.pt")),
    ],
)
def test_parse_repo_ref(text: str, expected: tuple[str, str | None, str | None]) -> None:
    from tinv_cli.hub.refs import parse_repo_ref

    ref = parse_repo_ref(text)
    assert (ref.repo_id, ref.revision, ref.path) == expected


@pytest.mark.parametrize("text", ["", "not a repo", "a/b/c", "a/b:../../etc/passwd", "a/b:/abs.pt", "a/b@"])
def test_parse_repo_ref_refuses(text: str) -> None:
    from tinv_cli.errors import TinvError
    from tinv_cli.hub.refs import parse_repo_ref

    with pytest.raises(TinvError):
        parse_repo_ref(text)


def test_plan_push_compares_git_ids_and_lfs_sha256() -> None:
    import hashlib

    from huggingface_hub.hf_api import BlobLfsInfo, RepoSibling

    from tinv_cli.hub.push import git_blob_id, plan_push

    embeds, card, image = b"tensors", b"card", b"jpeg"
    remote = {
        ".gitattributes": RepoSibling(".gitattributes", 10, "0" * 40),
        "README.md": RepoSibling("README.md", 4, git_blob_id(card)),
        "learned_embeds.safetensors": RepoSibling(
            "learned_embeds.safetensors",
            7,
            "1" * 40,
            BlobLfsInfo(size=7, sha256=hashlib.sha256(embeds).hexdigest(), pointer_size=130),
        ),
        "concept_images/old.jpeg": RepoSibling("concept_images/old.jpeg", 4, git_blob_id(image)),
        "notes.txt": RepoSibling("notes.txt", 1, "2" * 40),
    }
    local = {"README.md": card, "learned_embeds.safetensors": embeds, "concept_images/new.jpeg": image}
    changed, stale = plan_push(local, remote)
    assert changed == ["concept_images/new.jpeg"]
    # Old concept images go; files tinv does not manage (.gitattributes, notes.txt) stay.
    assert stale == ["concept_images/old.jpeg"]
    assert plan_push({**local, "README.md": b"new card"}, remote)[0] == [
        "README.md",
        "concept_images/new.jpeg",
    ]


def test_pull_arguments_are_checked_before_any_request() -> None:
    from typer.testing import CliRunner

    from tinv_cli.cli import app

    runner = CliRunner()
    nothing = runner.invoke(app, ["pull"])
    assert nothing.exit_code == 1 and "nothing to pull" in nothing.output
    two_names = runner.invoke(app, ["pull", "a/b", "c/d", "--name", "x"])
    assert two_names.exit_code == 1 and "--name names one concept" in two_names.output
    both = runner.invoke(app, ["pull", "a/b", "--search", "cat"])
    assert both.exit_code == 1 and "not both" in both.output
    bad = runner.invoke(app, ["pull", "a/b/c"])
    assert bad.exit_code == 1 and "is not a Hub repository" in bad.output


_DIFFUSERS_LOADS_REPO = """
import sys, torch
from tests.tiny import build_tiny_sdxl_pipeline
pipe = build_tiny_sdxl_pipeline((768, 1280))
pipe.load_textual_inversion(sys.argv[1], subfolder="diffusers")
pipe.load_textual_inversion(sys.argv[1], subfolder="diffusers", weight_name="learned_embeds_2.safetensors",
                            text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)
for tokenizer, encoder in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
    ids = tokenizer.convert_tokens_to_ids(["<xl-toy>", "<xl-toy>_1"])
    rows = encoder.get_input_embeddings().weight[ids].detach().clone()
    torch.save(rows, sys.argv[2] + f"-{encoder.config.hidden_size}.pt")
"""


@pytest.mark.slow
def test_sdxl_entry_push_pull_round_trip(hub: LocalHub, tmp_path: Path) -> None:
    """An SDXL repository holds the {clip_l, clip_g} file the other tools read as learned_embeds.safetensors and
    diffusers' pair in diffusers/, which diffusers loads by repository id; pulling it, or a repository with the
    pair at its root, gives the concept."""
    import torch
    from safetensors.torch import load, save

    from tinv_cli.embedding import Embedding

    xl = Embedding("<xl-toy>", (_tensor(2, 1, 768), _tensor(2, 2, 1280)))
    entry = _registry(Path(os.environ["TINV_HOME"])).add(
        "xl-toy", xl, kind="style", source={"type": "imported"}
    )
    pushed = tinv("push", "xl-toy", HF_TOKEN=ALICE)
    assert pushed.code == 0, pushed.err
    files = hub.files("alice/xl-toy")
    pair = {"diffusers/learned_embeds.safetensors", "diffusers/learned_embeds_2.safetensors"}
    assert set(files) == (CONCEPT_FILES - {"learned_embeds.bin"}) | pair | {".gitattributes"}
    for name in (CONCEPT_FILES - {"learned_embeds.bin", "README.md"}) | pair:
        assert files[name] == (entry.path / name).read_bytes(), name
    clip = load(files["learned_embeds.safetensors"])
    assert set(clip) == {"clip_l", "clip_g"} and torch.equal(clip["clip_g"], xl.vectors[1])
    assert torch.equal(load(files["diffusers/learned_embeds.safetensors"])["<xl-toy>"], xl.vectors[0])
    assert torch.equal(load(files["diffusers/learned_embeds_2.safetensors"])["<xl-toy>"], xl.vectors[1])
    loaded = subprocess.run(
        [sys.executable, "-c", _DIFFUSERS_LOADS_REPO, "alice/xl-toy", str(tmp_path / "rows")],
        env={**os.environ, "HF_TOKEN": ALICE, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    for width, vectors in zip((768, 1280), xl.vectors, strict=True):
        assert torch.equal(torch.load(tmp_path / f"rows-{width}.pt", weights_only=True), vectors)
    card = files["README.md"].decode()
    assert (
        "- stable-diffusion-xl" in card
        and 'hf_hub_download("alice/xl-toy", "learned_embeds.safetensors")' in card
    )

    # What diffusers' SDXL textual inversion example writes: the pair at the repository root.
    hub.create_repo("someone/xl-pair")
    hub.commit(
        "someone/xl-pair",
        {
            "learned_embeds.safetensors": save({"<xl-pair>": _tensor(1, 3, 768)}),
            "learned_embeds_2.safetensors": save({"<xl-pair>": _tensor(1, 4, 1280)}),
        },
    )
    fresh = Path(os.environ["TINV_HOME"]).parent / "fresh-home"
    pulled = tinv("pull", "alice/xl-toy", "someone/xl-pair", TINV_HOME=str(fresh))
    assert pulled.code == 0, pulled.err
    assert pulled.out.split() == ["xl-toy@1", "xl-pair@1"]
    got = _registry(fresh).get("xl-toy")
    assert got.embedding().equal(xl) and got.family == "sdxl" and got.kind == "style"
    assert got.sha256 == entry.sha256
    other = _registry(fresh).get("xl-pair")
    assert (other.widths, other.family, other.info["source"]["format"]) == ((768, 1280), "sdxl", "diffusers")
    assert torch.equal(other.embedding().vectors[1], _tensor(1, 4, 1280))

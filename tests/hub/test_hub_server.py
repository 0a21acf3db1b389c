"""The local Hub answers the real huggingface_hub client the way the Hub does (tests/hubserver.py).

The client calls run in one subprocess (huggingface_hub fixes HF_ENDPOINT and offline mode at import, and the
test session runs offline); it prints what it saw as JSON and the assertions are made here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.hubserver import LocalHub, git_blob_oid

OWNER = "hf_ownerToken000001"
OTHER = "hf_otherToken000002"

CLIENT_SCRIPT = r"""
import json, sys
from huggingface_hub import CommitOperationAdd, HfApi, __version__, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub import errors

seen = {"version": __version__}
api = HfApi(token=sys.argv[1])
other = HfApi(token=sys.argv[2])
anonymous = HfApi(token=False)

def outcome(call):
    try:
        value = call()
    except Exception as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        return {"error": type(e).__name__, "status": status, "message": str(e).splitlines()[0]}
    return {"value": value}

seen["whoami"] = api.whoami()["name"]
seen["whoami_bad"] = outcome(lambda: HfApi(token="hf_wrongToken00000").whoami())
seen["create"] = [str(api.create_repo("owner/demo", exist_ok=True)), str(api.create_repo("owner/demo", exist_ok=True))]
seen["create_again"] = outcome(lambda: str(api.create_repo("owner/demo")))
seen["create_foreign"] = outcome(lambda: str(api.create_repo("someone-else/demo")))
seen["bad_yaml"] = outcome(lambda: api.create_commit(
    "owner/demo", [CommitOperationAdd("README.md", b"---\nlicense: [mit\n---\n")], commit_message="bad card"))
seen["bad_license"] = outcome(lambda: api.create_commit(
    "owner/demo", [CommitOperationAdd("README.md", b"---\nlicense:\n  name: mit\n---\n")], commit_message="bad"))
files = {"README.md": b"---\nlicense: mit\ntags:\n- textual_inversion\n---\n# demo\n",
         "learned_embeds.bin": bytes(range(256)) * 8, "concept_images/0.jpeg": b"\xff\xd8jpeg",
         "concept_images/1.jpeg": b"\xff\xd8jpeg2"}
first = api.create_commit("owner/demo", [CommitOperationAdd(p, d) for p, d in files.items()], commit_message="up")
seen["commit"] = {"oid": first.oid, "url": str(first.commit_url), "repo_id": first.repo_url.repo_id}
same = api.create_commit("owner/demo", [CommitOperationAdd("learned_embeds.bin", files["learned_embeds.bin"])],
                         commit_message="unchanged")
seen["unchanged_commit"] = same.oid
seen["stale_parent"] = outcome(lambda: api.create_commit(
    "owner/demo", [CommitOperationAdd("x.txt", b"x")], commit_message="x", parent_commit="0" * 40))
info = api.model_info("owner/demo", files_metadata=True)
seen["info"] = {"sha": info.sha, "private": info.private, "tags": info.tags,
                "siblings": {s.rfilename: [s.size, s.blob_id] for s in info.siblings}}
seen["tree"] = sorted(f.path for f in api.list_repo_tree("owner/demo", recursive=True))
seen["tree_top"] = sorted((type(f).__name__, f.path) for f in api.list_repo_tree("owner/demo"))
meta = get_hf_file_metadata(hf_hub_url("owner/demo", "learned_embeds.bin"), token=sys.argv[1])
seen["metadata"] = {"commit": meta.commit_hash, "etag": meta.etag, "size": meta.size,
                    "xet": meta.xet_file_data is not None}
seen["download"] = open(hf_hub_download("owner/demo", "concept_images/1.jpeg"), "rb").read().decode("latin-1")
seen["no_revision"] = outcome(lambda: api.model_info("owner/demo", revision="nope"))
seen["no_file"] = outcome(lambda: hf_hub_download("owner/demo", "missing.bin"))
seen["listing"] = [m.id for m in anonymous.list_models(search="concepts")]
seen["listing_author"] = [m.id for m in anonymous.list_models(author="sd-concepts-library", limit=3)]
seen["private_anonymous"] = outcome(lambda: anonymous.model_info("owner/private-toy").id)
seen["private_other"] = outcome(lambda: other.model_info("owner/private-toy").id)
seen["private_owner"] = outcome(lambda: api.model_info("owner/private-toy").id)
seen["private_listed_to_owner"] = [m.id for m in api.list_models(search="private-toy")]
seen["private_listed_to_other"] = [m.id for m in other.list_models(search="private-toy")]
seen["gated_anonymous"] = outcome(lambda: hf_hub_download("owner/gated-toy", "a.txt", token=False))
seen["gated_other"] = outcome(lambda: hf_hub_download("owner/gated-toy", "a.txt", token=sys.argv[2]))
seen["gated_info"] = outcome(lambda: anonymous.model_info("owner/gated-toy").gated)
print(json.dumps(seen))
"""


@pytest.fixture(scope="module")
def client_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The client script's observations, run once for the module against a Hub paged 2 items at a time."""
    with LocalHub(page_size=2) as hub:
        hub.add_user("owner", OWNER)
        hub.add_user("other", OTHER)
        for name in ("cat-toy", "dog-toy", "moon-toy", "sun-toy"):
            hub.create_repo(f"sd-concepts-library/{name}")
        hub.create_repo("owner/private-toy", private=True)
        hub.create_repo("owner/gated-toy", gated=True)
        hub.commit("owner/gated-toy", {"a.txt": b"a"})
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.endpoint,
            "HF_HUB_OFFLINE": "0",
            "HF_HOME": str(tmp_path_factory.mktemp("client") / "hf"),
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }
        env.pop("HF_TOKEN", None)
        done = subprocess.run(
            [sys.executable, "-c", CLIENT_SCRIPT, OWNER, OTHER],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout)
        seen["hub"] = hub
        seen["files"] = hub.files("owner/demo")
        seen["head"] = hub.head("owner/demo")
        seen["paths"] = [path for _, path, _ in hub.requests]
        yield seen


def test_auth_and_repo_creation(client_run: dict[str, Any]) -> None:
    endpoint = client_run["hub"].endpoint
    assert client_run["whoami"] == "owner"
    assert client_run["whoami_bad"]["status"] == 401
    assert client_run["create"] == [f"{endpoint}/owner/demo"] * 2  # the second answer is a 409 with exist_ok
    assert client_run["create_again"]["status"] == 409
    assert client_run["create_foreign"]["status"] == 403


def test_commits_with_yaml_validation_regular_uploads_and_parent_check(client_run: dict[str, Any]) -> None:
    assert client_run["bad_yaml"]["error"] == "ValueError"
    assert client_run["bad_yaml"]["message"].startswith("Invalid metadata in README.md")
    assert client_run["bad_license"]["error"] == "ValueError"
    commit = client_run["commit"]
    assert commit["repo_id"] == "owner/demo" and commit["url"].endswith(f"/owner/demo/commit/{commit['oid']}")
    # Preupload's oid let the client see the unchanged file and skip the empty commit.
    assert client_run["unchanged_commit"] == commit["oid"] == client_run["head"]
    assert client_run["stale_parent"]["status"] == 412
    assert client_run["files"]["learned_embeds.bin"] == bytes(range(256)) * 8
    # Regular uploads only: no LFS batch API, no Xet token routes.
    assert not [p for p in client_run["paths"] if "lfs" in p or "xet" in p]


def test_revision_info_tree_and_resolve(client_run: dict[str, Any]) -> None:
    files = client_run["files"]
    info = client_run["info"]
    assert info["sha"] == client_run["head"] and info["private"] is False
    assert "textual_inversion" in info["tags"] and "license:mit" in info["tags"]
    assert info["siblings"]["learned_embeds.bin"] == [2048, git_blob_oid(files["learned_embeds.bin"])]
    # page_size=2: the client followed the Link header through every page.
    assert client_run["tree"] == sorted([*files, "concept_images"])
    assert ["RepoFolder", "concept_images"] in client_run["tree_top"]
    assert client_run["metadata"] == {
        "commit": client_run["head"],
        "etag": git_blob_oid(files["learned_embeds.bin"]),
        "size": 2048,
        "xet": False,
    }
    assert client_run["download"] == "\xff\xd8jpeg2"
    assert client_run["no_revision"]["error"] == "RevisionNotFoundError"
    assert client_run["no_file"]["error"] == "RemoteEntryNotFoundError"


def test_listing_and_private_and_gated_repos(client_run: dict[str, Any]) -> None:
    assert client_run["listing"] == [
        f"sd-concepts-library/{n}" for n in ("cat-toy", "dog-toy", "moon-toy", "sun-toy")
    ]
    assert client_run["listing_author"] == [
        "sd-concepts-library/cat-toy",
        "sd-concepts-library/dog-toy",
        "sd-concepts-library/moon-toy",
    ]
    assert client_run["private_anonymous"] == {
        "error": "RepositoryNotFoundError",
        "status": 401,
        "message": client_run["private_anonymous"]["message"],
    }
    assert client_run["private_other"]["error"] == "RepositoryNotFoundError"
    assert client_run["private_other"]["status"] == 404
    assert client_run["private_owner"] == {"value": "owner/private-toy"}
    assert client_run["private_listed_to_owner"] == ["owner/private-toy"]
    assert client_run["private_listed_to_other"] == []
    assert client_run["gated_anonymous"]["error"] == "GatedRepoError"
    assert client_run["gated_anonymous"]["status"] == 401
    assert client_run["gated_other"]["error"] == "GatedRepoError"
    assert client_run["gated_other"]["status"] == 403
    assert client_run["gated_info"] == {"value": "manual"}


def _get(url: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_raw_answers_carry_the_hub_headers() -> None:
    with LocalHub() as hub:
        hub.add_user("owner", OWNER)
        hub.create_repo("owner/toy")
        head = hub.commit("owner/toy", {"learned_embeds.bin": b"\x80\x02tensors"})
        status, headers, body = _get(f"{hub.endpoint}/owner/toy/resolve/main/learned_embeds.bin")
        assert status == 200 and body == b"\x80\x02tensors"
        assert headers["X-Repo-Commit"] == head
        assert headers["ETag"] == f'"{git_blob_oid(body)}"'
        assert headers["Content-Length"] == str(len(body))
        assert not [h for h in headers if h.lower().startswith("x-xet") or h.lower() == "link"]

        status, headers, _ = _get(f"{hub.endpoint}/owner/toy/resolve/main/nope.bin")
        assert (status, headers["X-Error-Code"], headers["X-Repo-Commit"]) == (404, "EntryNotFound", head)
        status, headers, _ = _get(f"{hub.endpoint}/api/models/owner/missing")
        assert (status, headers["X-Error-Code"]) == (401, "RepoNotFound")
        status, headers, _ = _get(f"{hub.endpoint}/api/models/owner/missing", OWNER)
        assert (status, headers["X-Error-Code"]) == (404, "RepoNotFound")
        status, headers, _ = _get(f"{hub.endpoint}/api/models/owner/toy", "hf_notAToken")
        assert (status, headers["X-Error-Message"]) == (401, "Invalid credentials in Authorization header")
        assert OWNER not in repr(hub.requests)

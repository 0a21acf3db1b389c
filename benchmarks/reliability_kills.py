"""Kill `tinv train`, `import`, `pull` and `push` at random moments and check the registry after each kill.

For every operation: one uninterrupted run gives the reference result and its duration; then each trial starts
the same command in a fresh state, SIGKILLs it after a random fraction of that duration, and checks that

- the registry is consistent: `tinv list --json` answers, and every version folder it has is complete (its
  tinv.json reads and its embedding loads with the sha256 the entry records); no half entry is visible;
- running the command again succeeds, and gives the reference result (the same vectors; for train, a resumed
  run equals an uninterrupted one);
- after that rerun, the registry holds exactly one new version (no duplicate from the killed run), and
  $TINV_HOME/tmp holds nothing (staging left by the kill was swept).

Pull and push run against tests/hubserver.py, the local Hub-protocol server, over loopback. Run it with nothing
else on the machine (it is not a timing benchmark, but kills land at random moments of a real run):

    python benchmarks/reliability_kills.py --trials 8
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TOKEN = "hf_reliabilitytoken0123456789"


@dataclass
class Tally:
    operation: str
    kills: int = 0
    consistent: int = 0
    rerun_ok: int = 0
    same_result: int = 0
    no_duplicate: int = 0
    no_leftovers: int = 0
    failures: list[str] = field(default_factory=list)


def _env(home: Path, hf: Path, endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TINV_"))}
    env.update(
        TINV_HOME=str(home),
        HF_HOME=str(hf),
        HF_ENDPOINT=endpoint,
        HF_HUB_OFFLINE="0",
        HF_TOKEN=TOKEN,
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        OMP_NUM_THREADS="2",
        PYTHONPATH=str(REPO),
    )
    return env


def _tinv(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tinv_cli", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _registry_state(home: Path) -> tuple[bool, dict[str, str], str]:
    """(consistent, {ref: sha256 of its vectors}, what is wrong)."""
    import torch
    from safetensors.torch import load_file

    root = home / "registry"
    found: dict[str, str] = {}
    if not root.is_dir():
        return True, found, ""
    for version in sorted(root.glob("*/*")):
        info_path = version / "tinv.json"
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
            tensors = load_file(str(version / "learned_embeds.safetensors"))
        except Exception as error:  # any unreadable part is what this script looks for
            return False, found, f"{version}: {type(error).__name__}: {error}"
        digest = hashlib.sha256((version / "learned_embeds.safetensors").read_bytes()).hexdigest()
        if digest != info.get("sha256"):
            return False, found, f"{version}: sha256 differs from tinv.json"
        vectors = b"".join(t.to(torch.float32).numpy().tobytes() for _, t in sorted(tensors.items()))
        found[f"{version.parent.name}@{version.name}"] = hashlib.sha256(vectors).hexdigest()
    return True, found, ""


def _leftovers(home: Path) -> list[str]:
    tmp = home / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


@dataclass(frozen=True)
class Operation:
    name: str
    args: Callable[[str], list[str]]  # the command, given a name for this trial (a push's repository)
    prepare: Callable[[Path, dict[str, str]], None]  # state before the command (a fresh home each trial)
    new_versions: int = 1  # registry versions one successful run adds (a push adds none: it uploads)
    uploaded: Callable[[str], bytes | None] | None = None  # a push: the repository's embedding file
    # Whether running it again after it finished adds nothing (train resumes a finished run, pull sees the
    # commit it has); an import adds a version each time, so a kill that came after its rename allows one more.
    idempotent: bool = True


def _project(work: Path) -> None:
    shutil.copy(REPO / "concepts.toml", work)
    shutil.copytree(REPO / "data", work / "data", dirs_exist_ok=True)
    text = (work / "concepts.toml").read_text(encoding="utf-8")
    # A shorter run with checkpoints, so kills land in set-up, training, checkpointing and registration.
    text = text.replace("steps = 400", "steps = 120").replace("checkpoint_every = 0", "checkpoint_every = 20")
    (work / "concepts.toml").write_text(text, encoding="utf-8")


def _a1111_file(work: Path) -> None:
    import torch

    vectors = torch.randn(2, 768, generator=torch.Generator().manual_seed(0))
    torch.save({"string_to_param": {"*": vectors}, "name": "bad-hands", "step": 3000}, work / "bad-hands.pt")


def _run(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, float]:
    start = time.perf_counter()
    process = _tinv(args, env, cwd)
    _, err = process.communicate(timeout=900)
    return process.returncode, err.decode(errors="replace"), time.perf_counter() - start


def trial_series(operation: Operation, trials: int, base: Path, endpoint: str, rng: random.Random) -> Tally:
    tally = Tally(operation.name)
    reference = base / f"{operation.name}-reference"
    reference.mkdir(parents=True)
    env = _env(reference / "home", reference / "hf", endpoint)
    operation.prepare(reference, env)
    code, err, duration = _run(operation.args("reference"), env, reference)
    if code != 0:
        raise SystemExit(f"{operation.name}: the uninterrupted run failed: {err.strip().splitlines()[-1:]}")
    _, ref_state, _ = _registry_state(reference / "home")
    ref_vectors = sorted(ref_state.values())  # (what the reference run added: its home started empty)
    for trial in range(trials):
        work = base / f"{operation.name}-{trial}"
        work.mkdir()
        env = _env(work / "home", work / "hf", endpoint)
        operation.prepare(work, env)
        _, before, _ = _registry_state(work / "home")
        process = _tinv(operation.args(str(trial)), env, work)
        time.sleep(rng.uniform(0.05, 1.0) * duration)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        tally.kills += 1
        consistent, killed, problem = _registry_state(work / "home")
        finished_before_kill = len([ref for ref in killed if ref not in before])
        listing = subprocess.run(
            [sys.executable, "-m", "tinv_cli", "list", "--json"], env=env, cwd=work, capture_output=True
        )
        if consistent and listing.returncode == 0:
            tally.consistent += 1
        else:
            tally.failures.append(
                f"trial {trial}: after the kill: {problem or listing.stderr.decode()[-200:]}"
            )
        code, err, _ = _run(operation.args(str(trial)), env, work)
        if code != 0:
            tally.failures.append(f"trial {trial}: the rerun failed: {err.strip()[-300:]}")
            continue
        tally.rerun_ok += 1
        _, after, _ = _registry_state(work / "home")
        new = {ref: digest for ref, digest in after.items() if ref not in before}
        if operation.uploaded is not None:
            # A push: the repository holds exactly the entry's file.
            local = (
                work / "home" / "registry" / "bad-hands" / "1" / "learned_embeds.safetensors"
            ).read_bytes()
            same = operation.uploaded(str(trial)) == local
        else:
            same = sorted(set(new.values())) == sorted(set(ref_vectors))
        if same:
            tally.same_result += 1
        else:
            tally.failures.append(
                f"trial {trial}: the result differs from the uninterrupted run: {sorted(new)}"
            )
        expected = operation.new_versions + (0 if operation.idempotent else finished_before_kill)
        if len(new) == expected:
            tally.no_duplicate += 1
        else:
            tally.failures.append(f"trial {trial}: {len(new)} new versions, expected {expected}")
        left = _leftovers(work / "home")
        if not left:
            tally.no_leftovers += 1
        else:
            tally.failures.append(f"trial {trial}: left in tmp/: {left}")
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="kills per operation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="train, import, pull, push")
    args = parser.parse_args(argv)

    from tests.hubserver import LocalHub

    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="tinv-kills-"))
    with LocalHub() as hub:
        hub.add_user("alice", TOKEN)
        hub.create_repo("alice/pulled")
        vectors_file = base / "seed"
        vectors_file.mkdir()
        _a1111_file(vectors_file)
        import torch
        from safetensors.torch import save_file

        save_file({"<pulled>": torch.randn(1, 768)}, str(vectors_file / "learned_embeds.safetensors"))
        hub.commit(
            "alice/pulled",
            {
                "learned_embeds.safetensors": (vectors_file / "learned_embeds.safetensors").read_bytes(),
                "token_identifier.txt": b"<pulled>",
                "type_of_concept.txt": b"object",
            },
        )

        def pushed_entry(work: Path, env: dict[str, str]) -> None:
            _a1111_file(work)
            subprocess.run(
                [sys.executable, "-m", "tinv_cli", "import", str(work / "bad-hands.pt")],
                env=env,
                cwd=work,
                check=True,
                capture_output=True,
            )

        def uploaded(trial: str) -> bytes | None:
            repo = f"alice/pushed-{trial}"
            return hub.files(repo).get("learned_embeds.safetensors") if hub.has_repo(repo) else None

        operations = [
            Operation("train", lambda _: ["train", "violet-kite"], lambda work, env: _project(work)),
            Operation(
                "import",
                lambda _: ["import", "bad-hands.pt"],
                lambda work, env: _a1111_file(work),
                idempotent=False,
            ),
            Operation("pull", lambda _: ["pull", "alice/pulled"], lambda work, env: None),
            Operation(
                "push",
                lambda trial: ["push", "bad-hands", "--repo", f"alice/pushed-{trial}"],
                pushed_entry,
                new_versions=0,
                uploaded=uploaded,
            ),
        ]
        chosen = [op for op in operations if not args.only or op.name in args.only]
        tallies = [trial_series(op, args.trials, base, hub.endpoint, rng) for op in chosen]
    print(
        "| operation | kills | registry consistent after the kill | rerun succeeded | same result as "
        "uninterrupted | no duplicate version | nothing left in tmp/ |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for t in tallies:
        print(
            f"| {t.operation} | {t.kills} | {t.consistent} | {t.rerun_ok} | {t.same_result} | "
            f"{t.no_duplicate} | {t.no_leftovers} |"
        )
    for t in tallies:
        for failure in t.failures:
            print(f"- {t.operation}: {failure}")
    shutil.rmtree(base, ignore_errors=True)
    return 0 if all(not t.failures for t in tallies) else 1


if __name__ == "__main__":
    raise SystemExit(main())

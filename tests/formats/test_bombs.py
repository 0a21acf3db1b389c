"""Resource bombs are refused from what a file claims, before anything is materialised (formats/tensors.py):
safetensors headers and torch pickles (zip and legacy) claiming huge, wide or many tensors; and the sizes, counts
and steps `tinv sample` and `tinv eval` accept are bounded. Random bytes are "not an embedding file"; only a
pickle that names code to run is called one that would run code."""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
import torch._utils
from safetensors.torch import save_file
from typer.testing import CliRunner

from tinv_cli.cli.app import app
from tinv_cli.embedding import MAX_VECTORS, MAX_WIDTH
from tinv_cli.errors import FormatError, TinvError
from tinv_cli.evaluation.evaluate import EvalOptions
from tinv_cli.formats.tensors import load_tensors
from tinv_cli.registry.store import Registry
from tinv_cli.sampling.sample import SampleOptions


class _Storage:
    pass


_STORAGE = _Storage()


class _Tensor:
    """Pickles as torch's tensor rebuild of a ``shape`` float32 tensor over storage ``_STORAGE``."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        stride = tuple(int(torch.tensor(self.shape[i + 1 :]).prod()) for i in range(len(self.shape)))
        args = (_STORAGE, 0, self.shape, stride, False, collections.OrderedDict())
        return (torch._utils._rebuild_tensor_v2, args)


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, numel: int) -> None:
        super().__init__(file, protocol=2)
        self.numel = numel

    def persistent_id(self, obj: object) -> object:
        return ("storage", torch.FloatStorage, "0", "cpu", self.numel) if obj is _STORAGE else None


def deflated_pt(path: Path, shape: tuple[int, ...]) -> Path:
    """A torch zip file as torch.load reads it, with its storage deflated: a [1, 250000000] tensor (1 GB of
    zeros) in about 4 MB. Written in chunks, so making it takes no memory."""
    numel = 1
    for n in shape:
        numel *= n
    pkl = io.BytesIO()
    _Pickler(pkl, numel).dump({"<bomb>": _Tensor(shape)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("archive/data.pkl", pkl.getvalue())
        archive.writestr("archive/byteorder", "little")
        with archive.open("archive/data/0", "w", force_zip64=True) as f:
            chunk, left = bytes(1 << 24), numel * 4
            while left:
                f.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))
        archive.writestr("archive/version", "3\n")
    return path


def sparse_safetensors(path: Path, shape: list[int]) -> Path:
    """A safetensors file whose header claims ``shape`` float32, its data a hole: gigabytes that take no disk."""
    nbytes = 4
    for n in shape:
        nbytes *= n
    header = json.dumps({"<bomb>": {"dtype": "F32", "shape": shape, "data_offsets": [0, nbytes]}}).encode()
    header += b" " * (-len(header) % 8)
    with path.open("wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
        f.truncate(8 + len(header) + nbytes)
    return path


def test_the_test_files_are_what_torch_and_safetensors_read(tmp_path: Path) -> None:
    """Small versions of the bombs load with the libraries themselves: the refusals below are tinv's."""
    from safetensors.torch import load_file

    assert torch.load(deflated_pt(tmp_path / "ok.pt", (1, 32)), weights_only=True)["<bomb>"].shape == (1, 32)
    assert load_file(str(sparse_safetensors(tmp_path / "ok.safetensors", [1, 32])))["<bomb>"].shape == (1, 32)
    assert load_tensors(tmp_path / "ok.pt")["<bomb>"].shape == (1, 32)
    assert load_tensors(tmp_path / "ok.safetensors")["<bomb>"].shape == (1, 32)


CLAIMS = {
    "[1, 250000000]": ((1, 250_000_000), "width 250000000"),
    "[1, 10**7]": ((1, 10**7), "width 10000000"),
    "[100000, 768]": ((100_000, 768), "100000 vectors"),
    "[76, 768]": ((MAX_VECTORS + 1, 768), f"{MAX_VECTORS + 1} vectors"),
    "[8193]": ((MAX_WIDTH + 1,), f"width {MAX_WIDTH + 1}"),
    "[2, 3, 4]": ((2, 3, 4), "[vectors, width]"),
}


@pytest.mark.parametrize(("shape", "message"), CLAIMS.values(), ids=list(CLAIMS))
def test_claimed_shapes_no_embedding_has_are_refused_from_the_header(
    shape: tuple[int, ...], message: str, tmp_path: Path
) -> None:
    sparse = sparse_safetensors(tmp_path / "bomb.safetensors", list(shape))
    with pytest.raises(FormatError, match=message):
        load_tensors(sparse)


@pytest.mark.parametrize(
    ("shape", "message"), [CLAIMS["[1, 10**7]"], CLAIMS["[100000, 768]"], CLAIMS["[2, 3, 4]"]]
)
def test_claimed_shapes_are_refused_from_the_pickles_metadata(
    shape: tuple[int, ...], message: str, tmp_path: Path
) -> None:
    with pytest.raises(FormatError, match=message):
        load_tensors(deflated_pt(tmp_path / "bomb.pt", shape))


def test_a_small_view_of_a_huge_storage_and_a_huge_view_of_a_small_one(tmp_path: Path) -> None:
    # torch.save keeps a view's whole storage: 768 numbers shown, 10**7 stored (and loaded).
    torch.save({"<v>": torch.zeros(10**7)[:768]}, tmp_path / "view.pt")
    with pytest.raises(FormatError, match="stores 10000000 numbers"):
        load_tensors(tmp_path / "view.pt")
    # One stored number shown as [75, 10**6] (stride 0): tiny on disk, 300 MB once made contiguous.
    torch.save({"<v>": torch.zeros(1).expand(75, 10**6)}, tmp_path / "expanded.pt")
    with pytest.raises(FormatError, match="width 1000000"):
        load_tensors(tmp_path / "expanded.pt")


def test_legacy_torch_pickles_are_checked_too(tmp_path: Path) -> None:
    torch.save({"<old>": torch.randn(2, 32)}, tmp_path / "ok.pt", _use_new_zipfile_serialization=False)
    assert load_tensors(tmp_path / "ok.pt")["<old>"].shape == (2, 32)
    torch.save({"<old>": torch.zeros(200, 32)}, tmp_path / "tall.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(FormatError, match="200 vectors"):
        load_tensors(tmp_path / "tall.pt")


def test_too_many_tensors_and_a_huge_header(tmp_path: Path) -> None:
    save_file({f"t{i}": torch.zeros(1) for i in range(400)}, str(tmp_path / "many.safetensors"))
    with pytest.raises(FormatError, match="400 tensors"):
        load_tensors(tmp_path / "many.safetensors")
    path = tmp_path / "header.safetensors"
    path.write_bytes((10**9).to_bytes(8, "little") + b"{" + b" " * 100)
    with pytest.raises(FormatError, match="header claims"):
        load_tensors(path)


_MEASURE = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    from tinv_cli.errors import TinvError
    from tinv_cli.registry.store import Registry
    from tinv_cli.registry.transfer import import_file
    import torch, safetensors.torch, PIL.Image  # loaded before the baseline: they are not the bomb
    registry = Registry()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        import_file(registry, Path(sys.argv[1]))
        outcome = "imported"
    except TinvError as e:
        outcome = "refused: " + e.message
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) // 1024, outcome, sep="\\n")  # ru_maxrss is in kB on Linux
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in kB on Linux only")
@pytest.mark.parametrize("kind", ["deflated .pt", "sparse .safetensors"])
def test_importing_a_huge_claim_stays_under_100_mb(kind: str, tmp_path: Path) -> None:
    if kind == "deflated .pt":
        bomb = deflated_pt(tmp_path / "bomb.pt", (1, 250_000_000))
    else:
        bomb = sparse_safetensors(tmp_path / "bomb.safetensors", [1, 250_000_000])
    assert bomb.stat().st_blocks * 512 < 10 * 1024 * 1024  # a few MB on disk claiming 1 GB
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(bomb)],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ,
    )
    assert run.returncode == 0, run.stderr
    grown_mb, outcome = run.stdout.splitlines()
    assert outcome.startswith("refused: ") and "width 250000000" in outcome
    assert int(grown_mb) < 100, f"peak memory grew by {grown_mb} MB"
    assert Registry().list() == []


def test_random_bytes_are_not_an_embedding_but_a_code_running_pickle_is_refused_as_such(
    tmp_path: Path,
) -> None:
    randoms = []
    for i, head in enumerate([b"\x80\x02", b"\x80\x04", b"PK\x03\x04", b""]):
        path = tmp_path / f"random{i}.pt"
        path.write_bytes(head + os.urandom(4096))
        randoms.append(path)
    for path in randoms:
        result = CliRunner().invoke(app, ["import", str(path)])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert "would run code" not in result.output, result.output
        assert (
            "not an embedding file" in result.output
            or "corrupt" in result.output
            or "neither" in result.output
        )

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.mkdir, (str(tmp_path / "pwned"),))

    torch.save({"<evil>": Payload()}, tmp_path / "evil.pt")
    result = CliRunner().invoke(app, ["import", str(tmp_path / "evil.pt")])
    assert result.exit_code == 1 and "would run code" in result.output, result.output
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"size": (100_000, 100_000)}, "8 to 4096 px"),
        ({"size": (4104, 512)}, "8 to 4096 px"),
        ({"num_images": 101}, "num images must be at most 100"),
        ({"steps": 10**6}, "steps must be at most 1000"),
        ({"batch_size": 1000}, "batch size must be at most 100"),
    ],
)
def test_sample_options_are_bounded(options: dict[str, object], message: str) -> None:
    with pytest.raises(TinvError, match=message):
        SampleOptions(**options).check()  # type: ignore[arg-type]
    SampleOptions(size=(4096, 4096), num_images=100, steps=1000).check()


def test_sample_command_refuses_a_huge_size_in_one_line() -> None:
    result = CliRunner().invoke(app, ["sample", "a cat", "--size", "100000x100000"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "8 to 4096 px" in result.output.splitlines()[0], result.output


@pytest.mark.parametrize(
    ("options", "message"), [({"samples": 10**6}, "samples"), ({"steps": 5000}, "steps")]
)
def test_eval_options_are_bounded(options: dict[str, int], message: str) -> None:
    with pytest.raises(TinvError, match=f"{message} must be at most"):
        EvalOptions(**options).check()  # type: ignore[arg-type]
    EvalOptions(samples=1000, steps=1000).check()

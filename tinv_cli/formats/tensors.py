"""Reading and writing the raw tensors of an embedding file: safetensors, or a pickle opened only with
``torch.load(weights_only=True)``. This is the only place tinv opens an embedding file.

Before any tensor is materialised, the shapes the file claims are read from its safetensors header or, for a
pickle, from its metadata (the pickle stream run by an unpickler that builds nothing, only notes each tensor's
shape and each storage's size), and refused when no embedding has them: a few hundred bytes of header can claim
gigabytes of tensor.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from tinv_cli.atomic import write_with
from tinv_cli.embedding import MAX_VECTORS, MAX_WIDTH
from tinv_cli.errors import FormatError, NotFoundError

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt"}

# Bounds on what a file may claim, checked before its tensors are loaded. An embedding holds one [n, d] tensor
# per text encoder (at most 3 encoders in any model; the split layout spends one key per vector); the elements
# bound is what 4 encoders of MAX_VECTORS x MAX_WIDTH would hold (about 2.5 M floats, 10 MB).
MAX_TENSORS = 4 * MAX_VECTORS
MAX_ELEMENTS = 4 * MAX_VECTORS * MAX_WIDTH
# A safetensors header and a pickle's data.pkl describe a handful of tensors: a few kilobytes.
MAX_HEADER_BYTES = 4 * 1024 * 1024
# All the members of a torch zip, uncompressed: MAX_ELEMENTS float64s plus the pickle.
MAX_UNPACKED_BYTES = MAX_ELEMENTS * 8 + MAX_HEADER_BYTES
_NOT_EMBEDDING = "pass an embedding file (.safetensors, .pt or .bin)"


# Reading raw tensors


def load_tensors(path: Path) -> dict[str, Any]:
    """The dict a safetensors file or a weights-only pickle holds; FormatError for anything else."""
    head = read_head(path)
    if is_safetensors(head):
        return _load_safetensors(path)
    if path.suffix.lower() == ".safetensors" and not _is_pickle(head):
        raise FormatError(
            f"{path} is not a valid safetensors file (it does not start with a safetensors header)",
            "the file is damaged or mislabelled; download or export it again",
        )
    if not _is_pickle(head):
        raise FormatError(f"{path} is neither a safetensors file nor a PyTorch pickle", _NOT_EMBEDDING)
    _pickle_shapes(path)
    return _load_pickle(path)


def read_head(path: Path) -> bytes:
    if path.is_dir():
        raise FormatError(f"{path} is a folder, not an embedding file", "pass the embedding file inside it")
    try:
        with path.open("rb") as f:
            head = f.read(9)
    except FileNotFoundError as e:
        raise NotFoundError(f"{path} does not exist", "check the path") from e
    except OSError as e:
        raise FormatError(f"{path} cannot be read: {e.strerror}", "check the file's permissions") from e
    if not head:
        raise FormatError(
            f"{path} is empty (0 bytes)", "the download or export was interrupted; get it again"
        )
    return head


def is_safetensors(head: bytes) -> bool:
    # safetensors: an 8-byte little-endian header length, then the JSON header itself.
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") >= 2


def _is_pickle(head: bytes) -> bool:
    # torch.save writes a zip archive; older torch and plain pickles start with the PROTO opcode.
    return head.startswith(b"PK\x03\x04") or (
        head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    )


def _load_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError, safe_open

    header = _safetensors_header(path)
    names = [key for key, info in header.items() if key != "__metadata__" and isinstance(info, dict)]
    if is_lora(names):
        # A LoRA's own weights (hundreds of 4-D tensors) are never read: only the embeddings bundled in it.
        names = [key for key in names if key.startswith(BUNDLE_PREFIX)]
        if not names:
            raise FormatError(
                f"{path} is a LoRA without bundled embeddings; tinv imports embeddings",
                "load the LoRA in your UI as a LoRA; pass tinv an embedding file, or a LoRA with bundle_emb keys",
            )
    check_shapes(path, [header[key].get("shape") for key in names])
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {key: f.get_tensor(key) for key in names}
    except SafetensorError as e:
        raise FormatError(
            f"{path} is a truncated or corrupt safetensors file ({e})", "download or export it again"
        ) from e


# Embeddings bundled in a LoRA file (A1111, ComfyUI and OneTrainer): ``bundle_emb.<name>.<key>``.
BUNDLE_PREFIX = "bundle_emb."
# Parts of the tensor names of the LoRA (and LyCORIS) files of kohya, diffusers/PEFT, OneTrainer and A1111.
_LORA_MARKS = ("lora_down", "lora_up", "lora_A.", "lora_B.", "lora_unet", "lora_te", "hada_w", "lokr_w")


def is_lora(names: Sequence[str]) -> bool:
    """Whether tensor names are a LoRA's: its weights, or embeddings bundled into one."""
    return any(name.startswith(BUNDLE_PREFIX) or any(m in name for m in _LORA_MARKS) for name in names)


def _load_pickle(path: Path) -> dict[str, Any]:
    import torch

    # The original textual-inversion code (and A1111 files made with it) stored string_to_param as an
    # nn.ParameterDict. Rebuilding one only sets attributes on a module object, so it is safe to allow.
    allowed = (
        torch.serialization.safe_globals([torch.nn.ParameterDict])
        if hasattr(torch.serialization, "safe_globals")
        else contextlib.nullcontext()
    )
    try:
        # A file object, not the path: recent torch picks safetensors by the ".safetensors" suffix alone.
        with allowed, warnings.catch_warnings(), path.open("rb") as f:
            warnings.simplefilter("ignore")
            data = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Weights only load failed" not in text:
            raise FormatError(f"{path} is a corrupt pickle ({_first_line(text)})", "download it again") from e
        # Only a pickle that names a global (a function or class to import and call) would run code; anything
        # else weights_only stops at is bytes that are not a torch file at all.
        if "GLOBAL" not in text:
            raise FormatError(
                f"{path} is not an embedding file (a damaged or foreign pickle: {_weights_only_reason(text)})",
                _NOT_EMBEDDING,
            ) from e
        raise FormatError(
            f"{path} was refused: unpickling it needs arbitrary Python objects, which would run code "
            f"({_weights_only_reason(text)}); tinv never executes such files",
            "ask for a .safetensors version of the embedding, or re-save it from a trusted tool",
        ) from e
    except (RuntimeError, EOFError, ValueError, KeyError, OSError) as e:
        raise FormatError(
            f"{path} is a truncated or corrupt PyTorch file ({_first_line(str(e))})",
            "download or export it again",
        ) from e
    if not isinstance(data, dict):
        raise FormatError(
            f"{path} holds a {type(data).__name__}, not a dict of named tensors",
            "tinv reads embedding files whose tensors are stored under names (tokens or format keys)",
        )
    return data


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no details"


def _weights_only_reason(text: str) -> str:
    for line in text.splitlines():
        if "GLOBAL" in line or "Unsupported" in line:
            return line.strip().rstrip(".")
    return "it needs objects other than tensors"


def _safetensors_header(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if size > MAX_HEADER_BYTES:
            raise FormatError(
                f"{path}: its safetensors header claims {size} bytes; an embedding's is a few hundred",
                "the file is damaged or not a textual inversion embedding",
            )
        raw = f.read(size)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(
            f"{path} is a corrupt safetensors file (its header is not JSON)", "download it again"
        ) from e
    if not isinstance(header, dict):
        raise FormatError(
            f"{path} is a corrupt safetensors file (its header is not a JSON object)", "download it again"
        )
    return header


def safetensors_metadata(path: Path) -> dict[str, str]:
    return dict(_safetensors_header(path).get("__metadata__") or {})


def check_shapes(path: Path, shapes: Sequence[Any], storages: Sequence[int] = ()) -> None:
    """Refuse a file whose tensors (their shapes, and for a pickle its storages' element counts) no embedding
    has, before anything is loaded: at most 2 dimensions, a width of 1 to MAX_WIDTH, at most MAX_VECTORS rows."""
    if len(shapes) > MAX_TENSORS:
        raise FormatError(f"{path} holds {len(shapes)} tensors; an embedding has a few", _NOT_EMBEDDING)
    for shape in shapes:
        if not isinstance(shape, (list, tuple)) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise FormatError(f"{path} is a corrupt file (a tensor of shape {shape!r})", "download it again")
        if len(shape) > 2:
            raise FormatError(
                f"{path} holds a tensor of shape {list(shape)}; an embedding is [vectors, width]",
                _NOT_EMBEDDING,
            )
        if shape and shape[-1] > MAX_WIDTH:
            raise FormatError(
                f"{path} holds a tensor of width {shape[-1]}; no text encoder is wider than {MAX_WIDTH}",
                "the file is not a textual inversion embedding",
            )
        if len(shape) == 2 and shape[0] > MAX_VECTORS:
            raise FormatError(
                f"{path} holds {shape[0]} vectors in one tensor; a prompt holds at most {MAX_VECTORS}",
                "the file is not a textual inversion embedding",
            )
    elements = sum(storages)
    if elements > MAX_ELEMENTS:
        raise FormatError(
            f"{path} stores {elements} numbers; an embedding has at most {MAX_ELEMENTS}",
            "the file is not a textual inversion embedding",
        )


# Reading a pickle's shapes without loading it


class _Stub:
    """What the shape reader builds for any object a pickle names: nothing, whatever it is given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Stub:
        return _Stub()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


class _ShapeReader(pickle.Unpickler):
    """Runs a torch pickle stream calling nothing it names: each tensor rebuild is noted (its size), each
    storage reference too (its element count), and every other global becomes a ``_Stub``."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file)
        self.shapes: list[Any] = []
        self.storages: dict[Any, int] = {}

    def find_class(self, module: str, name: str) -> Any:
        # torch's own rebuild functions, named by the pickle, are stood in for (never imported or called).
        if module.startswith("torch") and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return self._tensor
        if module.startswith("torch") and name.startswith("_rebuild_parameter"):
            return lambda data, *_rest: data
        if module.startswith("torch") and name == "_rebuild_from_type_v2":
            return lambda func, _type, args, _state: func(*args)
        return _Stub

    def persistent_load(self, pid: Any) -> Any:
        # torch's storage references: ("storage", type, key, location, element count[, view]), zip and legacy.
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[4], int):
            self.storages[pid[2]] = pid[4]
        return _Stub()

    def _tensor(self, _storage: Any, _offset: Any, size: Any, *_rest: Any) -> _Stub:
        self.shapes.append(tuple(size) if isinstance(size, (tuple, list)) else size)
        return _Stub()


# The first of the pickles in torch's legacy (pre-zip) format; the tensors are in the fourth.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _pickle_shapes(path: Path) -> list[Any]:
    """The shapes of the tensors a torch pickle (zip or legacy) holds, and a check of its storages' sizes."""
    unpacked = 0
    try:
        # torch.save writes a zip; a file that starts like one and is not is a cut-off download.
        if read_head(path).startswith(b"PK"):
            with zipfile.ZipFile(path) as archive:
                members = archive.infolist()
                unpacked = sum(m.file_size for m in members)
                pickles = [m for m in members if m.filename.endswith("data.pkl")]
                if len(pickles) != 1 or pickles[0].file_size > MAX_HEADER_BYTES:
                    raise FormatError(
                        f"{path} is not an embedding file (a zip of {len(members)} members, not torch's layout)",
                        _NOT_EMBEDDING,
                    )
                reader = _ShapeReader(io.BytesIO(archive.read(pickles[0])))
                reader.load()
        else:
            with path.open("rb") as f:
                reader = _ShapeReader(f)
                if reader.load() == _LEGACY_MAGIC:
                    for _ in range(3):  # protocol version, system info, then the object itself
                        reader.load()
    except FormatError:
        raise
    except (EOFError, zipfile.BadZipFile) as e:
        raise FormatError(
            f"{path} is a truncated or corrupt PyTorch file ({type(e).__name__})",
            "download or export it again",
        ) from e
    # Any other stream the reader cannot follow is no torch file, whatever its first bytes (unpickling bytes
    # that are not a pickle raises many kinds of error).
    except Exception as e:
        raise FormatError(
            f"{path} is not an embedding file (a damaged or foreign pickle: {type(e).__name__})",
            _NOT_EMBEDDING,
        ) from e
    check_shapes(path, reader.shapes, list(reader.storages.values()))
    # Whatever the pickle says, the members torch would unpack are bounded too (deflate packs 1 GB in 1 MB).
    if unpacked > MAX_UNPACKED_BYTES:
        raise FormatError(
            f"{path} unpacks to {unpacked} bytes; an embedding file holds at most {MAX_UNPACKED_BYTES}",
            _NOT_EMBEDDING,
        )
    return reader.shapes


def save_tensors(
    path: Path,
    tensors: dict[str, Any],
    *,
    pickle: bool | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """safetensors (with ``metadata`` in its header), or torch.save where the name asks for a pickle."""
    if pickle is None:
        pickle = path.suffix.lower() in PICKLE_SUFFIXES
    data = pickle_bytes(tensors) if pickle else safetensors_bytes(tensors, metadata)
    return write_with(path, lambda tmp: tmp.write_bytes(data))


def _owned(value: Any) -> Any:
    import torch

    # torch.save writes a view's whole storage, and safetensors refuses tensors that share one.
    if isinstance(value, torch.Tensor):
        return value.detach().clone().contiguous()
    if isinstance(value, dict):
        return {k: _owned(v) for k, v in value.items()}
    return value


def pickle_bytes(tensors: dict[str, Any]) -> bytes:
    """What torch.save writes for ``tensors``: the same bytes for the same tensors (torch's zip has no dates)."""
    import torch

    buffer = io.BytesIO()
    torch.save(_owned(tensors), buffer)
    return buffer.getvalue()


def safetensors_bytes(tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file of ``tensors``, byte-for-byte the same for the same input.

    safetensors' own writer puts the metadata in hash order, which changes from run to run; this one sorts the
    header's keys (tensors in name order, as safetensors lays them out for one dtype) so an export, and the
    hash A1111 records of it, are the same every time. safetensors reads it as its own.
    """
    import torch

    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        tensor = _owned(tensors[name])
        code = _dtype_code(tensor.dtype)
        if code is None:
            raise FormatError(f"{name}: tensors of {tensor.dtype} cannot be written to safetensors")
        # The raw little-endian bytes, as the format stores them (numpy has no bfloat16: its bits as int16).
        bits = tensor.view(torch.int16) if tensor.dtype == torch.bfloat16 else tensor
        array = bits.numpy()
        blob = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {
            "dtype": code,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    return len(text).to_bytes(8, "little") + text + b"".join(blobs)


def _dtype_code(dtype: Any) -> str | None:
    import torch

    codes = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}
    return codes.get(dtype)

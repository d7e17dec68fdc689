"""Read PyTorch's legacy (non-zip) ``.pth`` serialisation with numpy and ``pickle`` alone.

Layout of a legacy checkpoint: a pickled magic number, a pickled protocol version, a pickled
sys-info dict, the pickled object itself (here a state dict) whose tensors refer to storages
through persistent ids, a pickled list of storage keys, then for each key an int64 element
count followed by the storage's raw little-endian bytes.

Only the handful of globals a plain state dict needs are allowed; anything else is refused,
so a malicious file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class _StorageType:
    """Stand-in for ``torch.XxxStorage``: only carries the element dtype."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _TensorRef:
    """A tensor awaiting its storage's bytes (read after the pickle)."""

    def __init__(
        self, key: str, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        self.key = key
        self.offset = offset
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)


class _StorageRef:
    def __init__(self, key: str, dtype: np.dtype, numel: int) -> None:
        self.key = key
        self.dtype = dtype
        self.numel = numel


def _rebuild_tensor_v2(
    storage: _StorageRef,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
        raise ValueError("tensor does not refer to a storage")
    return _TensorRef(storage.key, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: bool, backward_hooks: Any) -> Any:
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that maps a few torch names and refuses every other global."""

    def __init__(self, file: io.BufferedIOBase, storages: dict[str, _StorageRef]) -> None:
        super().__init__(file, encoding="utf-8")
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ValueError(f"forbidden global in checkpoint: {module}.{name}") from None

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise ValueError(f"unsupported persistent id in checkpoint: {pid!r:.80}")
        storage_type, key, _location, numel = pid[1], str(pid[2]), pid[3], int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise ValueError("persistent id does not name a storage type")
        if len(pid) > 5 and pid[5] is not None:
            raise ValueError("storage views are not supported")
        ref = self.storages.get(key)
        if ref is None:
            ref = self.storages[key] = _StorageRef(key, storage_type.dtype, numel)
        return ref


def _load_plain(f: io.BufferedIOBase) -> Any:
    """Unpickle one of the header pickles: plain data only, no globals at all."""
    return _RestrictedUnpickler(f, {}).load()


def read_legacy_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Read a legacy-format PyTorch state dict into ``{name: ndarray}`` without torch.

    Raises ``ValueError`` if the file is not a legacy checkpoint, is truncated, or uses a
    global outside the small allow-list.
    """
    path = Path(path)
    with path.open("rb") as f:
        try:
            magic = _load_plain(f)
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"{path} is not a legacy PyTorch checkpoint") from exc
        if magic != LEGACY_MAGIC:
            raise ValueError(f"{path} is not a legacy PyTorch checkpoint (bad magic number)")
        try:
            protocol = _load_plain(f)
            sys_info = _load_plain(f)
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"{path}: corrupt checkpoint header") from exc
        if protocol != LEGACY_PROTOCOL:
            raise ValueError(f"{path}: unsupported checkpoint protocol {protocol!r}")
        if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
            raise ValueError(f"{path}: only little-endian checkpoints are supported")

        storages: dict[str, _StorageRef] = {}
        try:
            obj = _RestrictedUnpickler(f, storages).load()
            keys = _load_plain(f)
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"{path}: corrupt checkpoint body") from exc
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: checkpoint does not hold a state dict")
        if not isinstance(keys, list):
            raise ValueError(f"{path}: corrupt storage key list")

        data: dict[str, np.ndarray] = {}
        for key in keys:
            key = str(key)
            ref = storages.get(key)
            if ref is None:
                raise ValueError(f"{path}: storage {key} is not referenced")
            head = f.read(8)
            if len(head) != 8:
                raise ValueError(f"{path}: truncated checkpoint")
            numel = int(np.frombuffer(head, "<i8")[0])
            nbytes = numel * ref.dtype.itemsize
            raw = f.read(nbytes)
            if numel < 0 or len(raw) != nbytes:
                raise ValueError(f"{path}: truncated checkpoint")
            data[key] = np.frombuffer(raw, ref.dtype)

    out: dict[str, np.ndarray] = {}
    for name, value in obj.items():
        if not isinstance(value, _TensorRef):
            continue  # e.g. metadata entries; a plain state dict holds only tensors
        flat = data.get(value.key)
        if flat is None:
            raise ValueError(f"{path}: missing storage for {name}")
        if len(value.size) != len(value.stride) or min((*value.size, *value.stride), default=0) < 0:
            raise ValueError(f"{path}: tensor {name} has an invalid shape")
        itemsize = flat.dtype.itemsize
        spans = zip(value.size, value.stride, strict=True)
        needed = value.offset + sum((s - 1) * st for s, st in spans) + 1
        if any(s == 0 for s in value.size):
            needed = 0
        if value.offset < 0 or needed > flat.size:
            raise ValueError(f"{path}: tensor {name} lies outside its storage")
        arr = np.lib.stride_tricks.as_strided(
            flat[value.offset :],
            shape=value.size,
            strides=tuple(st * itemsize for st in value.stride),
            writeable=False,
        )
        out[str(name)] = np.array(arr, copy=True).astype(flat.dtype.newbyteorder("="))
    return out

"""Reading a package's data files, none of which may run code: safetensors, ``.npy``/``.npz``
without pickles, PyTorch state dicts with ``weights_only=True``.

A file that is not what its slot says (a pickle where safetensors belong, an object array in a
test tensor) is an :class:`~zoo.errors.IntegrityError` naming the file, never a traceback from
inside a reader, and nothing in it is executed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError, IntegrityError
from ..imageio import check_declared, npy_header, read_npy_header
from .archive import Limits

_SMALL = "a package's arrays are small (test crops, statistics)"


def _unreadable(path: Path, what: str, e: Exception) -> IntegrityError:
    return IntegrityError(f"'{Path(path).name}' ({path}) is not {what} ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else 'unreadable'}). The package is damaged or "
                          "was tampered with; nothing in the file was run. Pull it again, or ask its author.")


def state_dict(path: str | Path) -> dict:
    """The tensors of a safetensors file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _unreadable(path, "a safetensors file", e) from None


def torch_state_dict(path: str | Path) -> dict:
    """A PyTorch state dict saved with ``torch.save``, read with ``weights_only=True`` (tensors only)."""
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError) as e:
        raise _unreadable(path, "a plain PyTorch state dict (tensors only)", e) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise IntegrityError(f"'{Path(path).name}' holds no plain state dict (a mapping of names to tensors)")
    return state


def array(path: str | Path) -> np.ndarray:
    """The array of a ``.npy`` file of numbers (bool, integer, real float). Its header is checked
    before anything is allocated: the dtype, and a size that its file holds and an archive
    member may hold. Object arrays, which would need unpickling, are refused."""
    try:
        shape, dtype, stored = npy_header(path)
        check_declared(Path(path).name, shape, dtype, Limits.max_member_bytes, stored, _SMALL)
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, InputError) as e:
        raise _unreadable(path, "a numeric .npy array", e) from None


def _check_members(path: str | Path) -> None:
    """Each array of a ``.npz``: numbers, and a declared size that its member and an archive
    member may hold (checked from the headers, before anything is allocated)."""
    import zipfile

    with zipfile.ZipFile(path) as npz:
        for info in npz.infolist():
            with npz.open(info) as f:
                shape, dtype = read_npy_header(f)
                check_declared(f"'{info.filename}'", shape, dtype, Limits.max_member_bytes,
                               info.file_size - f.tell(), _SMALL)


def arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` file of numbers, read in full (object arrays refused)."""
    import zipfile

    try:
        _check_members(path)
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            raise ValueError("it is a single .npy array")
        with loaded:
            return {name: loaded[name] for name in loaded.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, InputError) as e:
        raise _unreadable(path, "a .npz of numeric arrays", e) from None


def load_weights(network, path: str | Path, strict: bool = True) -> None:
    """Load a safetensors file into ``network``; weights of another architecture are named, not a torch traceback."""
    try:
        network.load_state_dict(state_dict(path), strict=strict)
    except RuntimeError as e:
        raise IntegrityError(f"'{Path(path).name}' does not fit the network its spec describes: "
                             f"{str(e).splitlines()[0][:300]}") from None

"""Opening an ONNX file from a package with ONNX Runtime, trusting nothing outside it.

An ONNX file may keep its tensors in "external data" files named by path, which ONNX Runtime
would read from anywhere on disk (``../../home/you/.ssh/id_rsa``). A package's graphs must be
self-contained: any tensor with external data is refused. The session is built from the bytes
that were checked, so the file cannot change between the check and the load.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import IntegrityError


def _tensors(graph):
    """Every tensor of a graph: initializers, sparse initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for sub in attribute.graphs:
                yield from _tensors(sub)


def check_self_contained(model, source: str) -> None:
    """Refuse a graph that keeps any tensor in an external file (a path we would have to trust)."""
    from onnx.external_data_helper import uses_external_data

    for tensor in _tensors(model.graph):
        if uses_external_data(tensor):
            where = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise IntegrityError(f"{source}: the ONNX graph keeps tensor '{tensor.name}' in an external file "
                                 f"('{where}'); bioimage-zoo runs self-contained ONNX files only, and reads no "
                                 "path a package names. Save it with onnx.save(model, path, "
                                 "save_as_external_data=False).")


def checked_bytes(path: str | Path) -> bytes:
    """The bytes of a self-contained ONNX file (parsed once to check it)."""
    import onnx
    from google.protobuf.message import DecodeError

    data = Path(path).read_bytes()
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise IntegrityError(f"{Path(path).name} is not an ONNX model ({type(e).__name__}); the package is "
                             "damaged or was not made by an ONNX exporter") from None
    check_self_contained(model, Path(path).name)
    return data


def open_session(path: str | Path, options=None, providers=None, transform=None):
    """An ONNX Runtime session over the checked bytes of ``path``; ``transform`` (bytes -> bytes)
    rewrites the checked graph in memory first (the file is never changed)."""
    import onnxruntime as ort

    data = checked_bytes(path)
    if transform is not None:
        data = transform(data)
    try:
        return ort.InferenceSession(data, sess_options=options, providers=providers or ["CPUExecutionProvider"])
    except Exception as e:   # ORT raises its own Fail/InvalidGraph/InvalidArgument types
        raise IntegrityError(f"ONNX Runtime cannot load {Path(path).name}: {str(e).splitlines()[0][:300]}") from None

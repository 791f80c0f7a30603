"""A fault injector for the parity tests (test-only, so it lives here and not in the library)."""
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def corrupt_transpose(path: str | Path, out: str | Path, name_contains: str = "o_proj") -> str:
    """Write a copy of an exported graph with one square weight transposed: the classic exporter bug that still
    passes every shape check. Used to prove parity catches it. Returns the corrupted initializer's name."""
    m = onnx.load(str(path))
    for init in m.graph.initializer:
        a = numpy_helper.to_array(init)
        if name_contains in init.name and a.ndim == 2 and a.shape[0] == a.shape[1]:
            init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(a.T), init.name))
            onnx.save_model(m, str(out))
            return init.name
    raise ValueError(f"no square 2-D initializer whose name contains {name_contains!r} in {path}")

#!/usr/bin/env python3
"""Build the built-in reference model files in dicomnode/models, byte for byte.

    .venv/bin/python scripts/build_reference_models.py           # write, print sha256
    .venv/bin/python scripts/build_reference_models.py --check   # compare, write nothing

``ct_tissue_reference.keras`` is two 1x1 convolutions whose weights come from
``dicomnode.models.ct_tissue_reference.layer_weights()`` (no training, no randomness). A
Keras file is a zip of ``config.json``, ``metadata.json`` and ``model.weights.h5``; Keras
stamps the save time into the zip and the metadata and writes Python object ids into the
config, so the script rewrites those to fixed values to make the bytes reproducible. The
digest still depends on the Keras and h5py versions that write it (``keras_version`` is in
the metadata): the README records the versions that built the shipped file.

Before writing, the script loads the rebuilt file the way the runner does
(``keras.models.load_model(path, compile=False)``) and checks its classes on every integer
HU value from -1100 to 3100, the range edges included, against the ranges themselves.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the dicomnode checkout beside this script, installed or not

from dicomnode.models import BUILTIN_MODELS, BuiltinModel  # noqa: E402 - needs the path above
from dicomnode.models import ct_tissue_reference as design  # noqa: E402 - needs the path above

EDGE_VALUES = (-191, -190, -30, -29, 150, 151, 299, 300)
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest date, as Keras uses for two entries


def build_ct_tissue_model() -> Any:
    """The Keras model of the design, weights set from ``layer_weights()``."""
    import keras

    hu = keras.Input(shape=(None, None, 1), name="hu", dtype="float32")
    steps = keras.layers.Conv2D(4, 1, activation="sigmoid", name="hu_thresholds")(hu)
    probabilities = keras.layers.Conv2D(4, 1, activation="softmax", name="tissue_probabilities")(
        steps
    )
    model = keras.Model(hu, probabilities, name="ct_tissue_reference")
    for layer_name, (kernel, bias) in design.layer_weights().items():
        model.get_layer(layer_name).set_weights([kernel, bias])
    return model


def reproducible(archive: bytes) -> bytes:
    """The same Keras archive without the save time and with object ids renumbered."""
    with zipfile.ZipFile(io.BytesIO(archive)) as source:
        entries = [(info.filename, source.read(info)) for info in source.infolist()]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as target:
        for name, data in entries:
            if name == "config.json":
                data = json.dumps(_renumber_shared_objects(json.loads(data))).encode()
            elif name == "metadata.json":
                metadata = json.loads(data)
                metadata.pop("date_saved", None)  # Keras writes it and never reads it
                data = json.dumps(metadata).encode()
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.external_attr = 0o644 << 16
            target.writestr(info, data, compress_type=zipfile.ZIP_STORED)
    return out.getvalue()


def _renumber_shared_objects(config: Any) -> Any:
    """Replace ``shared_object_id`` values (``id()`` of Python objects) by 1, 2, ..."""
    numbers: dict[int, int] = {}

    def visit(node: Any) -> Any:
        if isinstance(node, dict):
            result = {}
            for key, value in node.items():
                if key == "shared_object_id":
                    value = numbers.setdefault(value, len(numbers) + 1)
                result[key] = visit(value)
            return result
        if isinstance(node, list):
            return [visit(item) for item in node]
        return node

    return visit(config)


def verify_ct_tissue_model(path: Path) -> None:
    """Load as the runner does and check the classes against the HU ranges."""
    import keras

    model = keras.models.load_model(path, compile=False)
    hu = np.arange(-1100, 3101, dtype=np.float32)
    assert set(EDGE_VALUES) <= set(hu.tolist())
    image = hu.reshape(1, 1, -1, 1)  # one 1-row image: (batch, y, x, channel)
    output = np.asarray(model.predict_on_batch(image))[0, 0]
    expected = design.true_labels(hu)
    wrong = np.flatnonzero(output.argmax(axis=-1) != expected)
    if wrong.size:
        raise SystemExit(f"{path}: wrong class at HU {hu[wrong][:10].tolist()}")
    twin = design.probabilities(hu)
    if not np.allclose(output, twin, atol=1e-4):
        raise SystemExit(f"{path}: output differs from the NumPy twin of the design")
    if output.max(axis=-1).min() < 0.999:
        raise SystemExit(f"{path}: a class probability on an integer HU is below 0.999")


def build(output_dir: Path, check: bool) -> bool:
    """Build each model; write it (or, with ``check``, compare it). True when all agree."""
    reference = BUILTIN_MODELS["ct-tissue-reference"]
    with tempfile.TemporaryDirectory() as scratch:
        saved = Path(scratch) / "saved.keras"
        build_ct_tissue_model().save(saved)
        data = reproducible(saved.read_bytes())
        rebuilt = Path(scratch) / reference.filename
        rebuilt.write_bytes(data)
        verify_ct_tissue_model(rebuilt)
    return publish(reference, data, output_dir, check, made="rebuilt")


def publish(reference: BuiltinModel, data: bytes, output_dir: Path, check: bool, made: str) -> bool:
    """Write a model file built from source (or, with ``check``, compare it with the one
    there); True when it agrees. Shared with build_onnx_reference.py."""
    digest = hashlib.sha256(data).hexdigest()
    target = output_dir / reference.filename
    print(f"{reference.filename}: {len(data)} bytes, sha256 {digest}")
    if check:
        same = target.is_file() and target.read_bytes() == data
        print(f"{target}: {'identical' if same else f'DIFFERS from the {made} file'}")
        return same
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_bytes(data)
    temporary.replace(target)
    print(f"wrote {target}")
    if digest != reference.sha256:
        print(f"update BuiltinModel.sha256 in dicomnode/models/__init__.py and README: {digest}")
    return True


def main(build: Callable[[Path, bool], bool] = build, what: str = "rebuild") -> int:
    """The command line of a model build script: --output-dir, --check."""
    parser = argparse.ArgumentParser(
        description=(sys.modules["__main__"].__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=REPO / "dicomnode" / "models",
        help="where the model files go (default: dicomnode/models)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"{what} and compare with the files there; exit 1 if any differs",
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before Keras imports TensorFlow
    return 0 if build(args.output_dir, args.check) else 1


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Convert the shipped ``ct_tissue_reference.keras`` to ``ct_tissue_reference.onnx`` with tf2onnx.

    .venv/bin/python scripts/build_onnx_reference.py           # write, print sha256
    .venv/bin/python scripts/build_onnx_reference.py --check   # compare, write nothing

The Keras file is the source: the ONNX file is what ``tf2onnx.convert.from_keras`` makes
of it (opset 17, input ``hu`` of shape (batch, y, x, 1), output ``tissue_probabilities``),
so the ``onnx`` runner runs the very network the ``tensorflow`` runner runs. tf2onnx writes
its version into ``producer_version``; nothing else varies between runs, so the bytes are
reproducible for one tf2onnx, TensorFlow and onnx version (the README records them).

Before writing, the script runs the converted model in onnxruntime, as the runner does,
and checks the class of every integer HU from -1100 to 3100 against the ranges, and the
probabilities against the Keras model's.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the dicomnode checkout beside this script, installed or not

from build_reference_models import main, publish  # noqa: E402 - the script beside this one

from dicomnode.models import BUILTIN_MODELS  # noqa: E402 - needs the path above
from dicomnode.models import ct_tissue_reference as design  # noqa: E402 - needs the path above

OPSET = 17  # onnxruntime 1.16+ runs it; old enough for most other runtimes


def convert(keras_file: Path) -> tuple[bytes, Any]:
    """The ONNX bytes of ``keras_file``, and the Keras model (to compare outputs)."""
    import keras
    import tensorflow as tf
    import tf2onnx

    model = keras.models.load_model(keras_file, compile=False)
    signature = (tf.TensorSpec((None, None, None, 1), tf.float32, name="hu"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=OPSET)
    proto.doc_string = "REFERENCE model, not clinical: converted from ct_tissue_reference.keras"
    return proto.SerializeToString(deterministic=True), model


def verify(data: bytes, model: Any) -> None:
    """Run it in onnxruntime and check classes and probabilities."""
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    names = ([i.name for i in inputs], [o.name for o in outputs])
    if names != (["hu"], ["tissue_probabilities"]):
        raise SystemExit(f"unexpected tensor names {names}")
    hu = np.arange(-1100, 3101, dtype=np.float32)
    image = hu.reshape(1, 1, -1, 1)
    output = session.run(None, {"hu": image})[0][0, 0]
    wrong = np.flatnonzero(output.argmax(axis=-1) != design.true_labels(hu))
    if wrong.size:
        raise SystemExit(f"wrong class at HU {hu[wrong][:10].tolist()}")
    keras_output = np.asarray(model.predict_on_batch(image))[0, 0]
    if not np.allclose(output, keras_output, atol=1e-5):
        raise SystemExit("onnxruntime's output differs from the Keras model's")


def build(output_dir: Path, check: bool) -> bool:
    """Convert; write the file (or, with ``check``, compare it). True when it agrees."""
    keras_file = BUILTIN_MODELS["ct-tissue-reference"].path
    reference = BUILTIN_MODELS["ct-tissue-reference-onnx"]
    data, model = convert(keras_file)
    verify(data, model)
    return publish(reference, data, output_dir, check, made="converted")


if __name__ == "__main__":
    raise SystemExit(main(build, what="convert"))

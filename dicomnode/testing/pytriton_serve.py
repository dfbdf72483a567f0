"""Serve an ONNX model on Triton with NVIDIA PyTriton; run by the PyTriton venv's Python.

    python pytriton_serve.py MODEL.onnx NAME --http-port P --grpc-port G --metrics-port M

Not imported by dicomnode: PyTriton needs numpy < 2, so it lives in a virtual environment
of its own (:mod:`dicomnode.testing.triton_server`), and this file runs there with nothing of
dicomnode installed. The model runs in onnxruntime on the CPU behind Triton's dynamic
batcher; every port is bound to 127.0.0.1. It serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import onnxruntime
from pytriton.decorators import batch
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

LOOPBACK = "127.0.0.1"
MAX_BATCH_SIZE = 64


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", help="the .onnx file")
    parser.add_argument("name", help="the model's name on Triton")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    args = parser.parse_args()

    session = onnxruntime.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    (model_output,) = session.get_outputs()

    @batch  # type: ignore[untyped-decorator]  # PyTriton ships no type hints
    def infer(**inputs: Any) -> dict[str, Any]:
        array = np.asarray(inputs[model_input.name], dtype=np.float32)
        (output,) = session.run([model_output.name], {model_input.name: array})
        return {model_output.name: output}

    # Shapes without the batch axis, which max_batch_size adds.
    channels = model_input.shape[-1]
    classes = model_output.shape[-1]
    config = TritonConfig(
        http_address=LOOPBACK,
        http_port=args.http_port,
        grpc_address=LOOPBACK,
        grpc_port=args.grpc_port,
        metrics_address=LOOPBACK,
        metrics_port=args.metrics_port,
        allow_metrics=False,
        exit_on_error=True,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=args.name,
            infer_func=infer,
            inputs=[Tensor(name=model_input.name, dtype=np.float32, shape=(-1, -1, channels))],
            outputs=[Tensor(name=model_output.name, dtype=np.float32, shape=(-1, -1, classes))],
            config=ModelConfig(max_batch_size=MAX_BATCH_SIZE),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()

"""Runner configuration: the ``kind`` union, its registry, and TensorFlow's laziness."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest

import dicomnode.runners
from dicomnode.errors import ConfigError
from dicomnode.models import BUILTIN_MODELS
from dicomnode.runners import (
    RUNNERS,
    OnnxRunnerConfig,
    PythonRunnerConfig,
    RunnerConfig,
    TensorFlowRunnerConfig,
    TritonRunnerConfig,
    parse_runner_config,
)


def test_every_kind_in_the_union_is_registered_and_no_other() -> None:
    union = typing.get_args(typing.get_args(RunnerConfig)[0])
    kinds = {model.model_fields["kind"].default for model in union}
    assert kinds == set(RUNNERS) == {"tensorflow", "onnx", "triton", "python"}


def test_all_names_what_the_package_exports() -> None:
    exported = {name for name in vars(dicomnode.runners) if not name.startswith("_")}
    modules = {"abc", "batches", "callables", "config", "host", "process", "python", "registry"}
    modules |= {"onnx", "triton", "envelope", "native_stderr"}
    assert set(dicomnode.runners.__all__) == exported - modules - {"annotations", "tensorflow"}


def test_a_tensorflow_entry_gets_its_defaults() -> None:
    config = parse_runner_config({"kind": "tensorflow", "model": "builtin:ct-tissue-reference"})
    assert isinstance(config, TensorFlowRunnerConfig)
    assert (config.mode, config.batch_size, config.input_channels_last) == ("slices", 16, True)
    assert (config.timeout_seconds, config.max_concurrent) == (600.0, 1)
    assert config.model_path(Path("/anywhere")) == BUILTIN_MODELS["ct-tissue-reference"].path


def test_a_model_path_is_relative_to_the_configuration_folder(tmp_path: Path) -> None:
    config = parse_runner_config({"kind": "tensorflow", "model": "models/seg.keras"})
    assert isinstance(config, TensorFlowRunnerConfig)
    assert config.model_path(tmp_path) == tmp_path / "models" / "seg.keras"
    absolute = parse_runner_config({"kind": "tensorflow", "model": "/srv/seg.keras"})
    assert isinstance(absolute, TensorFlowRunnerConfig)
    assert absolute.model_path(tmp_path) == Path("/srv/seg.keras")


def test_onnx_and_triton_entries_get_their_defaults() -> None:
    onnx = parse_runner_config({"kind": "onnx", "model": "builtin:ct-tissue-reference-onnx"})
    assert isinstance(onnx, OnnxRunnerConfig)
    assert onnx.providers == ("CPUExecutionProvider",)
    assert (onnx.mode, onnx.batch_size, onnx.output_labels) == ("slices", 16, False)
    assert onnx.model_path(Path("/x")) == BUILTIN_MODELS["ct-tissue-reference-onnx"].path
    triton = parse_runner_config({"kind": "triton", "url": "gpu1:8000", "model_name": "ct"})
    assert isinstance(triton, TritonRunnerConfig)
    assert (triton.retries, triton.request_timeout_seconds, triton.timeout_seconds) == (3, 60, 600)
    assert triton.endpoint == ("gpu1:8000", False)
    secure = parse_runner_config(
        {"kind": "triton", "url": "https://gpu1:8443/triton/", "model_name": "ct"}
    )
    assert isinstance(secure, TritonRunnerConfig)
    assert secure.endpoint == ("gpu1:8443/triton", True)


def test_a_python_entry_gets_its_defaults() -> None:
    config = parse_runner_config(
        {"kind": "python", "function": "pkg.mod:fn", "options": {"threshold": 3}}
    )
    assert isinstance(config, PythonRunnerConfig)
    assert (config.isolation, config.timeout_seconds, config.max_concurrent) == (
        "process",
        60.0,
        2,
    )
    assert config.options == {"threshold": 3}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "keras", "model": "x.keras"}, "kind: Input tag 'keras'"),
        ({"kind": "onnx", "model": "x.onnx", "providers": ["CUDA"]}, "providers.0: String sh"),
        ({"kind": "onnx", "model": "x.onnx", "providers": []}, "providers: Tuple should"),
        ({"kind": "onnx", "model": "builtin:nope"}, "no built-in model 'nope'"),
        ({"kind": "triton", "url": "gpu1:8000"}, "model_name: Field required"),
        ({"kind": "triton", "url": "gpu1", "model_name": "m"}, "url: Value error, must be h"),
        ({"kind": "triton", "url": "ftp://g:1", "model_name": "m"}, "url: Value error, must be"),
        ({"kind": "triton", "url": "g:1", "model_name": "m", "model_version": "v2"}, "model_v"),
        ({"kind": "triton", "url": "g:1", "model_name": "m", "retries": 11}, "retries:"),
        ({"model": "x.keras"}, "kind: Unable to extract tag"),
        ({"kind": "tensorflow", "model": "x.keras", "batch": 4}, "batch: Extra inputs"),
        ({"kind": "tensorflow", "model": "builtin:nope"}, "no built-in model 'nope'"),
        ({"kind": "tensorflow", "model": "x.keras", "mode": "3d"}, "mode: Input should be"),
        ({"kind": "tensorflow", "model": "x.keras", "batch_size": 0}, "batch_size:"),
        ({"kind": "python", "function": "pkg.mod.fn"}, "'package.module:function'"),
        ({"kind": "python", "function": "m:f", "timeout_seconds": 0}, "timeout_seconds:"),
        ({"kind": "python", "function": "m:f", "max_concurrent": 0}, "max_concurrent:"),
    ],
)
def test_a_bad_entry_names_the_place_and_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=r"^pipelines\.ct\.runner: ") as caught:
        parse_runner_config(data, where="pipelines.ct.runner")
    assert message in str(caught.value)


def test_configs_are_frozen() -> None:
    config = parse_runner_config({"kind": "python", "function": "m:f"})
    with pytest.raises(ValueError, match="frozen"):
        config.max_concurrent = 3


def test_importing_the_runners_never_imports_tensorflow() -> None:
    """TensorFlow costs seconds and hundreds of MB: only loading a TensorFlow model pays."""
    code = (
        "import sys\n"
        "import dicomnode.runners, dicomnode.models, dicomnode.models.ct_tissue_reference\n"
        "from dicomnode.runners import ModelHost, parse_runner_config\n"
        "host = ModelHost({'ct': parse_runner_config("
        "{'kind': 'tensorflow', 'model': 'builtin:ct-tissue-reference'})}, base_dir='.')\n"
        "heavy = ('tensorflow', 'keras', 'onnxruntime', 'tritonclient')\n"
        "heavy = sorted(m for m in heavy if m in sys.modules)\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dicomnode_help_never_imports_tensorflow() -> None:
    code = (
        "import sys\n"
        "from dicomnode.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "sys.exit(1 if 'tensorflow' in sys.modules else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr

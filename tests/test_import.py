"""`import ember` stays light: no optional or heavy library is loaded by it."""

import subprocess
import sys

OPTIONAL = [
    "captum",
    "opacus",
    "flwr",
    "fairlearn",
    "onnxruntime",
    "fastapi",
    "uvicorn",
    "tensorboard",
    "matplotlib",
    "sklearn",
    "torchmetrics",
    "lightning",
    "torch._dynamo",
    "tokenizers",
    "sacrebleu",
    "mlflow",
    "pandas",
    "pyarrow",
    "selenium",
]


def test_import_loads_no_optional_dependency() -> None:
    code = f"import sys, ember; print(' '.join(m for m in {OPTIONAL!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"import ember loaded: {out}"


def test_public_names() -> None:
    import ember

    for name in ("fit", "Trainer", "models", "load_config", "Config"):
        assert hasattr(ember, name), name
    import ember.train  # the subpackage, not hidden by a function of the same name

    assert ember.train.Trainer is ember.Trainer and callable(ember.fit)

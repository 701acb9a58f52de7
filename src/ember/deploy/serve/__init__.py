"""Serving and monitoring: a FastAPI model server with dynamic batching, metrics and drift.

``ember serve digits-cnn@production`` runs :func:`create_app` under uvicorn (:func:`serve`);
``ember monitor http://127.0.0.1:8000`` watches it. FastAPI, uvicorn and prometheus-client are
imported only when an app is created (``pip install 'ember[serve]'``).

Example:
    >>> from ember.models import create
    >>> served = ServedModel.from_module(create("cnn_tiny", in_channels=1, image_size=8), (1, 8, 8))
    >>> app = create_app(served, max_batch=32, max_wait_ms=2.0)
"""

from ember.deploy.serve.app import ApiError, create_app, make_server, serve
from ember.deploy.serve.backends import (
    BACKENDS,
    OnnxRunner,
    PlannedRunner,
    Runner,
    RunOutput,
    ServedModel,
    TorchRunner,
    build_runner,
    load_plan,
    planned_runner,
)
from ember.deploy.serve.batching import BatcherClosedError, DynamicBatcher, QueueFullError
from ember.deploy.serve.monitor import DriftMonitor, DriftReport, Reference, Thresholds

__all__ = [
    "BACKENDS",
    "ApiError",
    "BatcherClosedError",
    "DriftMonitor",
    "DriftReport",
    "DynamicBatcher",
    "OnnxRunner",
    "PlannedRunner",
    "QueueFullError",
    "Reference",
    "RunOutput",
    "Runner",
    "ServedModel",
    "Thresholds",
    "TorchRunner",
    "build_runner",
    "create_app",
    "make_server",
    "load_plan",
    "planned_runner",
    "serve",
]

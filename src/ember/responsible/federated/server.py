"""Federated training of a recipe on Flower: FedAvg or FedProx over IID or Dirichlet clients.

``run_federated`` splits the recipe's training split among ``clients`` (`partition`), then runs
``rounds`` rounds in one of two ways, with the same client code (`make_client`):

- ``simulation``: Flower's simulation engine (Ray) on this machine;
- ``processes``: a real Flower server (gRPC on ``address``, loopback by default) in this process and
  each client as its own ``ember federated --client-id K`` process.

After every round the server scores the global model on the recipe's test split (else
validation). The federated run is recorded like any run: config, splits, per-round ``test/*``
metrics, the final global weights (so `ember eval RUN` works) and a summary.

Example (simulation, 2 clients, 1 round; ~30 s of which most is starting Ray):
    >>> result = run_federated({"data": {"name": "digits"}, "model": {"name": "cnn_tiny"}},  # doctest: +SKIP
    ...                        clients=2, rounds=1)
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save

from ember.config import Config, ConfigError, dump_yaml, load_config
from ember.data import ArrayData, make_loader, save_splits
from ember.recipe import build_task, prepare
from ember.responsible.federated.client import get_weights, make_client, set_weights
from ember.responsible.federated.partition import parse_partition, partition
from ember.track import RunStore, environment, source_version
from ember.train import evaluate
from ember.train.checkpoint import atomic_write_bytes, safetensors_ready

STRATEGIES = ("fedavg", "fedprox")


@dataclass
class FederatedResult:
    """What `run_federated` returns: the run, and the global model's test metrics after each round."""

    run_id: str
    run_dir: Path
    rounds: list[dict[str, float]] = field(default_factory=list)
    client_sizes: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def metrics(self) -> dict[str, float]:
        return self.rounds[-1] if self.rounds else {}


def _flwr() -> Any:
    try:
        import flwr
    except ImportError:
        raise ImportError("federated learning needs Flower: pip install 'ember[federated]'") from None
    logging.getLogger("flwr").setLevel(logging.ERROR)  # its deprecation notices for start_client and friends
    return flwr


def client_data(cfg: Config, clients: int, spec: str, seed: int) -> tuple[Any, list[ArrayData]]:
    """The prepared recipe and each client's share of its training split (deterministic)."""
    prep = prepare(cfg)
    if not isinstance(prep.train, ArrayData):
        raise ConfigError(
            f"federated clients split in-memory data; {cfg.data.name} loads as {type(prep.train).__name__}"
        )
    labels = (
        prep.train.y.numpy()
        if not prep.train.y.is_floating_point()
        else np.zeros(len(prep.train.y), dtype=np.int64)
    )
    parts = partition(labels, clients, spec, seed=seed)
    return prep, [prep.train.subset(idx) for idx in parts]


def run_federated(
    config: str | Path | dict[str, Any] | Config,
    overrides: list[str] | dict[str, Any] | None = None,
    *,
    clients: int = 10,
    rounds: int = 20,
    partition_spec: str = "iid",
    strategy: str = "fedavg",
    proximal_mu: float = 0.01,
    mode: str = "simulation",
    address: str | None = None,
    seed: int = 0,
    runs_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> FederatedResult:
    """Train ``config`` federated over ``clients`` for ``rounds`` rounds; record and return the run.

    ``trainer.epochs`` of the config is the clients' local epochs per round.
    """
    flwr = _flwr()
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy '{strategy}'; expected one of {', '.join(STRATEGIES)}")
    if mode not in ("simulation", "processes"):
        raise ValueError(f"unknown mode '{mode}'; expected simulation or processes")
    parse_partition(partition_spec)
    cfg = load_config(config, overrides)
    started = time.perf_counter()
    prep, shares = client_data(cfg, clients, partition_spec, seed)
    held_out = prep.test if prep.test is not None else prep.val
    task = build_task(cfg, prep.bundle)
    model = prep.model

    store = RunStore(runs_dir)
    text = dump_yaml(cfg)
    run = store.create(
        f"{cfg.name or 'federated'}-federated",
        config_yaml=text,
        params={
            "federated.clients": clients,
            "federated.rounds": rounds,
            "federated.partition": partition_spec,
            "federated.strategy": strategy,
            "federated.mode": mode,
        },
        seed=cfg.trainer.seed,
        source=source_version(),
        environment=environment(),
    )
    run.update(data_sha256=prep.data_sha256)
    save_splits(prep.splits, run.dir / "splits")
    result = FederatedResult(run.id, run.dir, client_sizes=[len(s.y) for s in shares])

    def central(
        server_round: int, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[float, dict[str, float]]:
        set_weights(model, parameters)
        loader = make_loader(held_out, batch_size=cfg.data.eval_batch_size, shuffle=False)
        metrics = {k: v for k, v in evaluate(model, loader, task).items() if not k.startswith("accuracy/")}
        if server_round > 0:
            run.log({f"test/{k}": v for k, v in metrics.items()}, step=server_round)
            result.rounds.append({"round": server_round, **metrics})
            if log is not None:
                log(
                    f"round {server_round}/{rounds}: "
                    + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k in ("loss", "accuracy"))
                )
        return float(metrics["loss"]), metrics

    common = dict(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=clients,
        min_evaluate_clients=0,
        min_available_clients=clients,
        evaluate_fn=central,
        on_fit_config_fn=lambda server_round: {"server_round": server_round},
        initial_parameters=flwr.common.ndarrays_to_parameters(get_weights(model)),
        fit_metrics_aggregation_fn=_weighted_mean,
    )
    chosen = (
        flwr.server.strategy.FedProx(proximal_mu=proximal_mu, **common)
        if strategy == "fedprox"
        else flwr.server.strategy.FedAvg(**common)
    )
    server_config = flwr.server.ServerConfig(num_rounds=rounds)
    try:
        if mode == "simulation":
            _simulate(flwr, cfg, prep.bundle, shares, rounds, server_config, chosen)
        else:
            _serve(
                flwr, config, overrides, clients, rounds, partition_spec, seed, address, server_config, chosen
            )
    except BaseException as e:
        run.finish("failed", error=str(e) or type(e).__name__)
        raise
    weights = run.dir / "model.safetensors"
    atomic_write_bytes(weights, save(safetensors_ready(model.state_dict())))
    run.artifact(weights, "weights")
    result.seconds = time.perf_counter() - started
    final = {f"test/{k}": v for k, v in result.metrics.items() if k != "round"}
    run.finish(
        "completed", summary={**final, "rounds": rounds, "clients": clients, "seconds": result.seconds}
    )
    return result


def _simulate(
    flwr: Any,
    cfg: Config,
    bundle: Any,
    shares: list[ArrayData],
    rounds: int,
    server_config: Any,
    strategy: Any,
) -> None:
    def client_fn(context: Any) -> Any:
        cid = int(context.node_config["partition-id"])
        return make_client(cfg, bundle, shares[cid], client_id=cid, rounds=rounds).to_client()

    os.environ.setdefault(
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0"
    )  # silences a FutureWarning; no GPUs are asked for
    threads = max(1, (os.cpu_count() or 1))
    import ray

    started = not ray.is_initialized()
    try:
        flwr.simulation.start_simulation(
            client_fn=client_fn,
            num_clients=len(shares),
            config=server_config,
            strategy=strategy,
            client_resources={"num_cpus": 1},
            ray_init_args={"num_cpus": threads, "include_dashboard": False, "log_to_driver": False},
        )
    finally:  # Flower's simulation leaves the Ray it started running (its processes, its open files)
        if started and ray.is_initialized():
            ray.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(
    flwr: Any,
    config: Any,
    overrides: Any,
    clients: int,
    rounds: int,
    spec: str,
    seed: int,
    address: str | None,
    server_config: Any,
    strategy: Any,
) -> None:
    """A real Flower server here; each client a separate ``ember federated --client-id`` process."""
    if not isinstance(config, str | Path):
        raise ValueError("processes mode starts clients from a config file; pass its path")
    address = address or f"127.0.0.1:{_free_port()}"
    args = [
        str(config),
        *(overrides or []),
        "--clients",
        str(clients),
        "--rounds",
        str(rounds),
        "--partition",
        spec,
        "--seed",
        str(seed),
        "--address",
        address,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-m", "ember", "federated", *args, "--client-id", str(k)], env=env)
        for k in range(clients)
    ]
    try:
        flwr.server.start_server(server_address=address, config=server_config, strategy=strategy)
    finally:
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    failed = [k for k, proc in enumerate(procs) if proc.returncode]
    if failed:
        raise RuntimeError(
            f"federated client process(es) {failed} exited with an error; see their output above"
        )


def run_client(
    config: str | Path,
    overrides: list[str] | None,
    *,
    client_id: int,
    clients: int,
    rounds: int,
    partition_spec: str,
    seed: int,
    address: str,
) -> None:
    """One client process: its share of the data, connected to the server at ``address`` until done."""
    flwr = _flwr()
    cfg = load_config(config, overrides)
    if not 0 <= client_id < clients:
        raise ValueError(f"--client-id {client_id} is not in [0, {clients})")
    torch.set_num_threads(1)
    prep, shares = client_data(cfg, clients, partition_spec, seed)
    client = make_client(cfg, prep.bundle, shares[client_id], client_id=client_id, rounds=rounds)
    for attempt in range(60):  # the server may still be starting
        try:
            flwr.client.start_client(
                server_address=address, client=client.to_client(), insecure=True, max_retries=1
            )
            return
        except Exception:
            if attempt == 59:
                raise
            time.sleep(1)


def _weighted_mean(results: list[tuple[int, dict[str, Any]]]) -> dict[str, float]:
    total = sum(n for n, _ in results) or 1
    keys = {k for _, m in results for k in m}
    out = {k: sum(n * float(m[k]) for n, m in results if k in m) / total for k in keys if k != "epsilon"}
    eps = [float(m["epsilon"]) for _, m in results if "epsilon" in m]
    if eps:
        out["epsilon_max"] = max(eps)
    return out


__all__ = ["STRATEGIES", "FederatedResult", "client_data", "run_client", "run_federated"]

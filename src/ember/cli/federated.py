"""``ember federated``: train a recipe over Flower clients (simulation, or real processes on loopback)."""

from __future__ import annotations

import argparse

from ember.cli._format import metrics_block

HELP = """Train a recipe federated: its training split is partitioned among --clients, each client trains
the recipe's model with its task and loop for trainer.epochs local epochs a round, and the server
averages their weights (FedAvg, or FedProx with a proximal term). After each round the global model
is scored on the recipe's test split. privacy.epsilon=E makes every client's training DP-SGD,
spending at most E over all rounds.

examples:
  ember federated configs/digits-cnn.yaml --clients 10 --rounds 20 --partition dirichlet:0.3
  ember federated configs/digits-cnn.yaml --clients 10 --rounds 20 --strategy fedprox --mu 0.01
  ember federated configs/digits-cnn.yaml --clients 3 --rounds 5 --mode processes   # real gRPC server + 3 client processes
  ember federated configs/digits-cnn.yaml trainer.epochs=2 privacy.epsilon=8
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "federated",
        help="federated training on Flower (FedAvg/FedProx, IID or Dirichlet clients)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="a recipe YAML, e.g. configs/digits-cnn.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    p.add_argument("--clients", type=int, default=10, help="number of clients (default 10)")
    p.add_argument("--rounds", type=int, default=20, help="federated rounds (default 20)")
    p.add_argument("--partition", default="iid", help="iid or dirichlet:ALPHA (default iid)")
    p.add_argument(
        "--strategy", default="fedavg", choices=["fedavg", "fedprox"], help="aggregation (default fedavg)"
    )
    p.add_argument("--mu", type=float, default=0.01, help="FedProx's proximal weight μ (default 0.01)")
    p.add_argument(
        "--mode",
        default="simulation",
        choices=["simulation", "processes"],
        help="Flower simulation (default) or a real server with client processes",
    )
    p.add_argument("--address", help="server address for --mode processes (default: a free loopback port)")
    p.add_argument("--seed", type=int, default=0, help="seed of the partition (default 0)")
    p.add_argument("--runs-dir", metavar="DIR", help="the run store (default $EMBER_RUNS or ./runs)")
    p.add_argument("--client-id", type=int, help=argparse.SUPPRESS)  # one client process (--mode processes)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ember.responsible.federated import run_client, run_federated

    if args.clients < 1 or args.rounds < 1:
        raise ValueError(f"--clients and --rounds must be at least 1; got {args.clients} and {args.rounds}")
    if args.client_id is not None:
        if not args.address:
            raise ValueError("--client-id needs --address, the server to join")
        run_client(
            args.config,
            args.overrides,
            client_id=args.client_id,
            clients=args.clients,
            rounds=args.rounds,
            partition_spec=args.partition,
            seed=args.seed,
            address=args.address,
        )
        return 0
    result = run_federated(
        args.config,
        args.overrides,
        clients=args.clients,
        rounds=args.rounds,
        partition_spec=args.partition,
        strategy=args.strategy,
        proximal_mu=args.mu,
        mode=args.mode,
        address=args.address,
        seed=args.seed,
        runs_dir=args.runs_dir,
        log=lambda line: print(f"  {line}", flush=True),
    )
    sizes = result.client_sizes
    print(
        f"{len(sizes)} clients of {min(sizes)}-{max(sizes)} examples, {len(result.rounds)} rounds in {result.seconds:.1f}s"
    )
    print(metrics_block({f"test/{k}": v for k, v in result.metrics.items() if k != "round"}))
    print(f"run {result.run_id} {result.run_dir}")
    return 0

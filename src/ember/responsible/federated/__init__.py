"""Federated learning on Flower: ember's model, task and loop in every client.

- `run_federated`: FedAvg / FedProx over IID or Dirichlet clients, in Flower's simulation or as a
  real server with client processes on loopback (`ember federated`);
- `partition`: IID and Dirichlet(α) splits of a data set among clients;
- `make_client`, `Proximal`: the Flower client and FedProx's proximal term as an optimizer transform.

Flower is optional (``pip install 'ember[federated]'``) and imported only when a run starts.
"""

from ember.responsible.federated.client import Proximal, get_weights, make_client, set_weights
from ember.responsible.federated.partition import parse_partition, partition
from ember.responsible.federated.server import STRATEGIES, FederatedResult, run_client, run_federated

__all__ = [
    "STRATEGIES",
    "FederatedResult",
    "Proximal",
    "get_weights",
    "make_client",
    "parse_partition",
    "partition",
    "run_client",
    "run_federated",
    "set_weights",
]

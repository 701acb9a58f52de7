"""Fault suite, artifacts: byte flips and truncations of every kind of file ember writes.

Each trial damages one copy of one artifact (a seeded random byte flipped, or the file cut at a
seeded random length) and loads it the way ember does. Every outcome is one of:

- ``refused``: an error ember reports in one line (the CLI's user-error types), naming the damage;
- ``harmless``: loaded, and what was loaded equals the undamaged artifact's (the flip hit bytes
  nothing reads, e.g. SQLite's free space);
- ``silent``: loaded, and different: damage accepted without a word;
- ``traceback``: any other exception.

The suite requires 0 silent and 0 tracebacks. The tallies are printed (``-s``) and recorded in the
README's RELIABILITY section.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import ember
from ember.config import ConfigError
from ember.data import DataError
from ember.deploy.bundle import open_bundle, package
from ember.deploy.placement import plan
from ember.deploy.serve.backends import load_plan
from ember.recipe import load_language_model, load_run_model
from ember.track import RunNotFoundError, RunStore, RunStoreError
from ember.track.registry import ModelNotFoundError, ModelRegistry
from ember.train import WeightsError
from ember.train.checkpoint import load_checkpoint, step_checkpoints

pytestmark = [pytest.mark.slow, pytest.mark.faults]

FLIPS, CUTS = 24, 6  # per artifact kind
REPORTED = (  # what the CLI prints as one line (cli.main's handled errors)
    ValueError,  # ArchiveError, BundleError, RegistryError, ArtifactError, DataError, ConfigError ...
    KeyError,  # ModelNotFoundError
    FileNotFoundError,
    RunNotFoundError,
    RunStoreError,
    WeightsError,  # CheckpointError
    ConfigError,
    DataError,
    ModelNotFoundError,
)
ROOT = Path(__file__).resolve().parents[2]


def digest(value: Any) -> str:
    """A stable hash of what a loader returned (tensors, dicts, lists, numbers, strings)."""
    h = hashlib.sha256()

    def walk(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            h.update(str((v.dtype, tuple(v.shape))).encode())
            h.update(v.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(v, dict):
            for k in sorted(v, key=str):
                h.update(repr(k).encode())
                walk(v[k])
        elif isinstance(v, list | tuple):
            for x in v:
                walk(x)
        elif hasattr(v, "tobytes"):
            h.update(v.tobytes())
        else:
            h.update(repr(v).encode())

    walk(value)
    return h.hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One of each artifact: a run (weights, checkpoints, splits, store), an LM run (tokenizer), a
    bundle, a registry entry and a serving plan."""
    base = tmp_path_factory.mktemp("world")
    runs = base / "runs"
    result = ember.fit(
        str(ROOT / "configs/digits-cnn.yaml"),
        {"trainer.epochs": 2, "model.name": "cnn_tiny", "trainer.checkpoint_min_interval": 0},
        runs_dir=runs,
        progress=False,
    )
    corpus = base / "plays.txt"
    corpus.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n\n" * 100)
    lm = ember.fit(
        str(ROOT / "configs/shakespeare-char-gpt.yaml"),
        {"data.name": "text", "data.path": str(corpus), "data.block_size": 16, "model.name": "gpt_tiny"}
        | {"trainer.epochs": 1, "data.windows_per_epoch": 8, "data.eval_batch_size": 8},
        runs_dir=runs,
        progress=False,
    )
    bundle = package(result.run_id, base / "digits.ember", runs_dir=runs)
    registry = ModelRegistry(base / "registry")
    registry.push(bundle, "digits")
    model = open_bundle(bundle).model
    plan_file = plan(
        model, torch.rand(4, 1, 8, 8), backends=["eager"], threads=(1,), batch_sizes=(1,), rounds=1
    ).save(base / "plan.json")
    return {"base": base, "runs": runs, "run": result.run_id, "lm": lm.run_id, "bundle": bundle,
            "registry": registry.root, "plan": plan_file}  # fmt: skip


def _kinds(w: dict[str, Any]) -> dict[str, tuple[Callable[[Path], Path], Callable[[Path], Any]]]:
    """kind → (the file inside a copy of the world, the loader reading that copy)."""
    run, lm = w["run"], w["lm"]

    def run_model(root: Path) -> Any:
        prep, _ = load_run_model(run, runs_dir=root / "runs")
        return prep.model.state_dict(), prep.splits

    def store(root: Path) -> Any:
        s = RunStore(root / "runs")
        return [(r, s.metrics(r.id), s.artifacts(r.id), s.params(r.id)) for r in s.list()]

    def registry_entry(root: Path) -> Any:
        b = open_bundle("digits@1", registry=ModelRegistry(root / "registry"))
        return b.model.state_dict(), b.meta

    def language_model(root: Path) -> Any:
        model, tokenizer, _ = load_language_model(lm, runs_dir=root / "runs")
        return tokenizer.encode("But soft, what light"), model.state_dict()

    def bundle(root: Path) -> Any:
        b = open_bundle(root / "digits.ember")
        return b.model.state_dict(), b.meta, b.profile.to_json()

    def checkpoint(root: Path) -> Any:
        c = load_checkpoint(_newest_checkpoint(root, run))
        return c.model, c.meta, c.tensors

    return {
        "weights": (lambda r: r / "runs" / run / "model.safetensors", run_model),
        "checkpoints": (lambda r: _newest_checkpoint(r, run), checkpoint),
        "splits": (lambda r: r / "runs" / run / "splits" / "train.npy", run_model),
        "run store DB": (lambda r: r / "runs" / "ember.db", store),
        "bundles": (lambda r: r / "digits.ember", bundle),
        "registry entries": (lambda r: next((r / "registry" / "blobs" / "sha256").iterdir()), registry_entry),
        "plan files": (lambda r: r / "plan.json", lambda r: load_plan(r / "plan.json")),
        "tokenizers": (lambda r: r / "runs" / lm / "tokenizer.json", language_model),
    }


def _newest_checkpoint(root: Path, run: str) -> Path:
    return step_checkpoints(root / "runs" / run / "checkpoints")[-1][1]


def _outcome(load: Callable[[Path], Any], root: Path, want: str) -> tuple[str, str]:
    try:
        got = digest(load(root))
    except REPORTED as e:
        return "refused", str(e)
    except Exception as e:
        return "traceback", f"{type(e).__name__}: {e}"
    return ("harmless" if got == want else "silent"), ""


def test_every_damaged_artifact_is_refused_or_harmless(world: dict[str, Any], tmp_path: Path) -> None:
    rng = random.Random(13)
    problems: list[str] = []
    tallies: dict[str, Counter[str]] = {}
    for kind, (locate, load) in _kinds(world).items():
        clean, copy = tmp_path / "clean", tmp_path / "copy"  # loaded at one path: records hold paths
        shutil.copytree(world["base"], clean, dirs_exist_ok=True)
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(clean, copy)
        want = digest(load(copy))
        size = locate(clean).stat().st_size
        counts: Counter[str] = Counter()
        trials = [("flip", rng.randrange(size)) for _ in range(FLIPS)]
        trials += [("cut", n) for n in [0, size - 1, *(rng.randrange(size) for _ in range(CUTS - 2))]]
        for how, at in trials:
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(clean, copy)
            target = locate(copy)
            data = bytearray(target.read_bytes())
            if how == "flip":
                data[at] ^= 1 << rng.randrange(8)
            else:
                del data[at:]
            target.write_bytes(bytes(data))
            for suffix in ("-wal", "-shm"):  # the store's journal would mask a damaged database file
                (target.parent / f"{target.name}{suffix}").unlink(missing_ok=True)
            outcome, message = _outcome(load, copy, want)
            counts[outcome] += 1
            if outcome in ("silent", "traceback"):
                problems.append(f"{kind}: {how} at byte {at}: {outcome} {message}")
        tallies[kind] = counts
        shutil.rmtree(clean)
    lines = [f"{k:18s} {sum(c.values()):3d} trials: " + json.dumps(dict(c)) for k, c in tallies.items()]
    print("\nartifact faults\n" + "\n".join(lines))
    assert not problems, "\n".join(problems[:20])

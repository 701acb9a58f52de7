"""Every family through `ember eval`, `ember report` and `ember check`: the task contract end to end.

One tiny real run per family (trained once per module, on first use): image and tabular
classification, regression, language models (char and BPE GPT, RNN), translation, detection,
segmentation, a fine-tuned and a LoRA genre classifier, and a run trained from Python on a user's
tensors. Each command runs through the CLI's own entry point and must print real content, never a
traceback; a check a task does not take is listed as not applicable, with why.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import ember
from ember.cli import main
from ember.evaluate.report import SECTIONS

ROOT = Path(__file__).resolve().parents[2]
SCENES = {
    "data.source": "digits", "data.num_train": 48, "data.num_test": 16, "data.canvas_size": 32,
    "data.batch_size": 16, "trainer.max_steps": 3, "trainer.epochs": 1,
}  # fmt: skip
BROWN_GPT = {"model.num_layers": 1, "model.num_heads": 2, "model.embed_dim": 32, "trainer.max_steps": 2}
GENRE = {**BROWN_GPT, "data.max_len": 32, "data.eval_batch_size": 512, "trainer.epochs": 1}


def _fit(config: str | dict[str, Any], overrides: dict[str, Any], runs: Path) -> str:
    source = str(ROOT / "configs" / config) if isinstance(config, str) else config
    return ember.fit(source, overrides, runs_dir=runs, progress=False).run_id


def _table(runs: Path, task: str) -> str:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 6)).astype(np.float32)
    score = x @ np.array([1.0, -2.0, 0.5, 0.0, 0.3, 0.0])
    y = np.digitize(score, [-1.0, 1.0]) if task == "classification" else (score + 0.3 * rng.normal(size=240))
    np.savez(runs / f"{task}.npz", x=x, y=y.astype(np.int64 if task == "classification" else np.float32))
    config = {
        "data": {"name": "npz", "path": str(runs / f"{task}.npz"), "batch_size": 32},
        "model": {"name": "mlp_tiny"}, "task": {"name": task}, "optim": {"lr": 0.01}, "trainer": {"epochs": 2},
    }  # fmt: skip
    return _fit(config, {}, runs)


def _text(runs: Path, model: str, tokenizer: str = "char") -> str:
    corpus = runs / "plays.txt"
    corpus.write_text(
        "".join(
            f"ROMEO {i}:\nBut soft, what light through yonder window {i % 7} breaks?\n\n" for i in range(240)
        )
    )
    config = {
        "data": {"name": "text", "path": str(corpus), "block_size": 16, "chunk_size": 48, "tokenizer": tokenizer,
                 "vocab_size": 300, "windows_per_epoch": 32, "eval_batch_size": 16, "val_fraction": 0.1,
                 "test_fraction": 0.1},
        "model": {"name": model}, "task": {"name": "language_model"}, "trainer": {"epochs": 1},
    }  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:  # a BPE corpus is cached: in a private cache
        patch.setenv("EMBER_DATA", str(runs / "cache"))
        return _fit(config, {}, runs)


def _translation(runs: Path) -> str:
    overrides = {
        "model.name": "encoder_decoder_tiny", "model.encoder_layers": 1, "model.decoder_layers": 1,
        "model.embed_dim": 32, "model.num_heads": 2, "data.tokenizer": "char", "data.max_len": 24,
        "data.val_books": ["Phlm"], "data.test_books": ["Jude"], "task.beam_size": 2, "task.max_len_a": 0.0,
        "task.max_len_b": 6, "task.val_decode_fraction": 0.0, "trainer.max_steps": 2, "trainer.epochs": 1,
    }  # fmt: skip
    return _fit("translate-en-es.yaml", overrides, runs)


def _genre(runs: Path, lora: bool) -> str:
    if not (runs / "pretrained").is_file():  # one pretrained LM for both fine-tuned runs
        lm = {**BROWN_GPT, "data.tokenizer": "char", "data.block_size": 32, "data.windows_per_epoch": 32}
        (runs / "pretrained").write_text(_fit("pretrain-brown-lm.yaml", lm, runs))
    extra = {"model.lora.rank": 2, "model.unfreeze": ["head"]} if lora else {}
    return _fit("finetune-brown-genre.yaml", {**GENRE, **extra}, runs)


def _python(runs: Path) -> str:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    model = ember.models.create("mlp_tiny", in_channels=6, image_size=1, num_classes=3)
    trainer = ember.Trainer(
        model, task="classification", epochs=2, batch_size=32, lr=0.01, runs_dir=runs, progress=False
    )
    run = trainer.fit((x[:200], y[:200]), (x[200:250], y[200:250])).run_id
    trainer.test((x[250:], y[250:]))
    return run


@dataclass(frozen=True)
class Family:
    train: Callable[[Path], str]
    unit: str
    baselines: tuple[str, ...]
    report: dict[str, str]  # section id -> text it must hold
    inapplicable: tuple[str, ...] = ()
    data: str = ""  # a pinned data set it needs in the cache (fetched, or the test skipped offline)


CLASSIFIED = {
    "confusion": "share of the row",
    "calibration": "ECE",
    "per-class": "support",
    "mistakes": "most confident",
}
LINEAR = ("majority", "logistic regression")
TOKENS = ("leakage", "shift", "imbalance")
FAMILIES = {
    "image-classification": Family(
        lambda r: _fit("digits-cnn.yaml", {"model.name": "cnn_tiny", "trainer.epochs": 1}, r), "examples", LINEAR,
        CLASSIFIED,
    ),
    "tabular-classification": Family(lambda r: _table(r, "classification"), "examples", LINEAR, CLASSIFIED),
    "regression": Family(
        lambda r: _table(r, "regression"), "examples", ("mean", "gradient boosting"),
        {"confusion": "on the diagonal", "mistakes": "largest errors"}, ("imbalance",),
    ),
    "char-gpt": Family(lambda r: _text(r, "gpt_tiny"), "blocks", ("unigram", "bigram"), {"mistakes": "hardest"}, TOKENS),
    "bpe-gpt": Family(
        lambda r: _text(r, "gpt_tiny", "bpe"), "blocks", ("unigram", "bigram"), {"mistakes": "hardest"}, TOKENS
    ),
    "rnn-lm": Family(lambda r: _text(r, "rnn_lm_tiny"), "blocks", ("unigram", "bigram"), {"mistakes": "hardest"}, TOKENS),
    "translation": Family(
        _translation, "sentences", ("copy", "word by word"), {"mistakes": "lowest sentence chrF"}, TOKENS,
        "en-es-verses",
    ),
    "detection": Family(
        lambda r: _fit("digit-detect.yaml", {**SCENES, "model.name": "centernet_tiny"}, r), "images",
        ("class prior", "components"), {"per-class": "AP@.5"}, ("imbalance",),
    ),
    "segmentation": Family(
        lambda r: _fit("digit-segment.yaml", {**SCENES, "model.name": "unet_tiny"}, r), "images",
        ("majority", "components"), {"confusion": "pixels", "per-class": "iou"}, ("imbalance",),
    ),
    "fine-tuned": Family(lambda r: _genre(r, lora=False), "examples", LINEAR, CLASSIFIED, ("shift",), "brown"),
    "lora": Family(lambda r: _genre(r, lora=True), "examples", LINEAR, CLASSIFIED, ("shift",), "brown"),
    "python": Family(_python, "examples", LINEAR, CLASSIFIED),
}  # fmt: skip
SLOW = {"translation", "fine-tuned", "lora"}  # the real verse pairs and Brown corpus: seconds to load
NAMES = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in FAMILIES]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The module's run store, and the run trained for each family so far."""
    return tmp_path_factory.mktemp("lifecycle"), {}


@pytest.fixture
def trained(store: tuple[Path, dict[str, str]], fetched: Any) -> Callable[[str], tuple[str, str]]:
    """``trained(family) -> (run id, runs dir)``: each family trained once per module, when first
    asked for (after its data is fetched, or the test skipped offline)."""
    runs, done = store

    def get(family: str) -> tuple[str, str]:
        if family not in done:
            if FAMILIES[family].data:
                fetched(FAMILIES[family].data)
            done[family] = FAMILIES[family].train(runs)
        return done[family], str(runs)

    return get


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in out + err, f"ember {' '.join(args)} exited {code}:\n{out}\n{err}"
    return out


@pytest.mark.parametrize("family", NAMES)
def test_eval(family: str, trained: Any, capsys: pytest.CaptureFixture[str]) -> None:
    run, runs = trained(family)
    expected = FAMILIES[family]
    data = json.loads(_cli(capsys, "eval", run, "--json", "--resamples", "100", "--runs-dir", runs))
    assert data["unit"] == expected.unit and data["run"] == run and data["n"] > 0
    head = data["intervals"][data["headline"]]
    assert head["low"] <= head["value"] <= head["high"] and len(data["intervals"]) >= 2
    assert tuple(b["name"] for b in data["baselines"]) == expected.baselines
    for b in data["baselines"]:
        margin = b["margin"]
        assert margin["metric"] == data["headline"] and 0 < margin["p_value"] <= 1
        assert margin["difference"]["value"] == pytest.approx(
            head["value"] - b["intervals"][data["headline"]]["value"]
        )


@pytest.mark.parametrize("family", NAMES)
def test_report(family: str, trained: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run, runs = trained(family)
    page = tmp_path / "report.html"
    out = _cli(capsys, "report", run, "--out", str(page), "--resamples", "50", "--runs-dir", runs)
    assert out.startswith(f"report {page}")
    sections = _sections(page.read_text())
    assert list(sections) == [key for key, _ in SECTIONS]
    for key, text in FAMILIES[family].report.items():
        assert text in sections[key], (key, sections[key][:500])
    assert "checks unavailable" not in sections["checks"] and "failed to run" not in sections["checks"]
    assert FAMILIES[family].baselines[-1] in sections["baselines"] and "<img" in sections["baselines"]


@pytest.mark.parametrize("family", NAMES)
def test_check(family: str, trained: Any, capsys: pytest.CaptureFixture[str]) -> None:
    run, runs = trained(family)
    findings = json.loads(_cli(capsys, "check", run, "--json", "--runs-dir", runs))
    names = {f["name"] for f in findings}
    assert all(f["severity"] in ("info", "warning", "error") and f["evidence"] for f in findings)
    assert "overfitting.gap" in names
    skipped = {f["name"]: f for f in findings if f["evidence"].get("applicable") is False}
    assert set(skipped) == set(FAMILIES[family].inapplicable), skipped
    assert all(
        f["message"].startswith("not applicable: ") and len(f["message"]) > 40 for f in skipped.values()
    )
    if "leakage" not in FAMILIES[family].inapplicable:
        assert any(n.startswith("leakage.duplicates:train/") for n in names)


HUMAN = {
    "python": "%",
    "regression": ".",
    "translation": "",
    "char-gpt": None,
}  # output marker; None: refused


@pytest.mark.parametrize(
    "family", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in HUMAN]
)
def test_human_export(family: str, trained: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run, runs = trained(family)
    sheet = str(tmp_path / "sheet")
    args = ["human", "export", run, "--likert", "--n", "5", "--out", sheet, "--runs-dir", runs]
    if HUMAN[family] is None:  # no text form to rate: one line, what to do instead
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "human rating does not apply to task 'language_model'" in err, err
        assert "ember generate" in err
        return
    assert "5 rows to rate" in _cli(capsys, *args)
    with open(tmp_path / "sheet" / "sheet.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and all(r["output"] and HUMAN[family] in r["output"] for r in rows)
    if family == "translation":  # the source sentence is the input raters read
        assert all(r["input"] for r in rows)


def test_python_run_without_a_kept_split_says_which_and_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run fit on a loader whose items are not tensor pairs keeps no split: eval names the split and
    the reason in one line; ``--data`` evaluates it on given arrays instead."""

    class Rows(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
        def __init__(self, n: int) -> None:
            self.x = torch.randn(n, 6, generator=torch.Generator().manual_seed(n))

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return self.x[i], int(self.x[i, 0] > 0)

    runs = tmp_path / "runs"
    model = ember.models.create("mlp_tiny", in_channels=6, image_size=1, num_classes=2)
    trainer = ember.Trainer(model, task="classification", epochs=1, runs_dir=runs, progress=False)
    loader = torch.utils.data.DataLoader(Rows(64), batch_size=16)
    run = trainer.fit(loader, torch.utils.data.DataLoader(Rows(32), batch_size=16)).run_id
    assert main(["eval", run, "--split", "val", "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no 'val' split (its items are not (x, y) tensor pairs)" in err, err
    x = np.random.default_rng(1).normal(size=(40, 6)).astype(np.float32)
    np.savez(tmp_path / "new.npz", x=x, y=(x[:, 0] > 0).astype(np.int64))
    out = _cli(
        capsys, "eval", run, "--data", str(tmp_path / "new.npz"), "--resamples", "50", "--runs-dir", str(runs)
    )
    assert re.search(rf"{run} · new.npz split · 40 examples · 95% bootstrap intervals", out), out
    assert "note: no baselines: run" in out and "'train' split" in out
    np.savez(tmp_path / "wide.npz", x=np.zeros((4, 7), np.float32), y=np.zeros(4, np.int64))
    assert main(["eval", run, "--data", str(tmp_path / "wide.npz"), "--runs-dir", str(runs)]) == 2
    assert "takes inputs of shape (N, 6)" in capsys.readouterr().err


class _Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.raw: dict[str, list[str]] = {}
        self.current = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section":
            self.current = dict(attrs).get("id") or ""
            self.raw[self.current] = []
        elif tag == "img" and self.current:
            self.raw[self.current].append("<img")

    def handle_data(self, data: str) -> None:
        if self.current:
            self.raw[self.current].append(data)


def _sections(page: str) -> dict[str, str]:
    parser = _Sections()
    parser.feed(page)
    return {k: " ".join(v) for k, v in parser.raw.items()}

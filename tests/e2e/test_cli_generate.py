"""``ember train`` on the language-model recipes (shrunk), then ``ember generate`` from the run."""

from pathlib import Path

TINY = ["model.name=gpt_tiny", "trainer.epochs=1", "data.windows_per_epoch=32", "data.eval_batch_size=16"]


def _run_id(stdout: str) -> str:
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("run "), last
    return last.split()[1]


def test_char_gpt_recipe_then_generate(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    corpus = tmp_path / "plays.txt"
    corpus.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n\n" * 300)
    runs = str(tmp_path / "runs")
    # the Shakespeare recipe as written, pointed at a small text file of the user's
    out = cli(
        "train", "configs/shakespeare-char-gpt.yaml", "data.name=text", f"data.path={corpus}", "data.block_size=32",
        *TINY, "--runs-dir", runs,
    ).stdout  # fmt: skip
    assert "val/bits_per_byte" in out and "test/loss" in out
    run = _run_id(out)
    assert (Path(runs) / run / "tokenizer.json").is_file()
    sampled = cli(
        "generate", run, "--prompt", "ROMEO:", "--max-new-tokens", "40", "--temperature", "0.8",
        "--top-p", "0.95", "--top-k", "20", "--repetition-penalty", "1.1", "--runs-dir", runs,
    ).stdout  # fmt: skip
    assert sampled.startswith("ROMEO:") and len(sampled) > len("ROMEO:")
    proc = cli("generate", "nope", "--runs-dir", runs, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_code_gpt_recipe_bpe_then_generate_with_stop(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    runs = str(tmp_path / "runs")
    out = cli(
        "train", "configs/code-gpt.yaml", "data.max_files=10", "data.vocab_size=400", "data.block_size=32",
        *TINY, "--runs-dir", runs,
        env={"EMBER_DATA": str(tmp_path / "cache")},
    ).stdout  # fmt: skip
    run = _run_id(out)
    text = cli(
        "generate", run, "--prompt", "def fibonacci(n):", "--max-new-tokens", "60", "--stop", "\\ndef ",
        "--runs-dir", runs,
    ).stdout  # fmt: skip
    assert text.startswith("def fibonacci(n):") and "\ndef " not in text

"""The generative families through the lifecycle, by the real command line on tiny runs (8x8
digits, one epoch): package, export (the network a sampler repeats), serve (/v1/generate answers
PNG images with the limits and metrics of /v1/predict; /v1/predict refuses with advice), report
(a grid of samples), check and eval (what applies, in one line each); a captioner answers
/v1/predict with phrases."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import pytest
from PIL import Image
from test_lifecycle_deploy import serving  # (tests/e2e is on the path: pytest puts it there)

from ember.cli import main
from ember.deploy.bundle import open_bundle
from ember.deploy.serve import ServedModel, create_app

TINY = ["data.name=digits", "model.image_size=8", "trainer.epochs=1", "--no-progress"]
RECIPES = {
    "vae": ("configs/digits-vae.yaml", "vae_tiny"),
    "gan": ("configs/fashion-dcgan.yaml", "dcgan_tiny"),
    "diffusion": ("configs/mnist-ddpm.yaml", "diffusion_unet_tiny"),
    "captioner": ("configs/fashion-captioner.yaml", "captioner_tiny"),
}


def _ember(capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> tuple[str, str]:
    capsys.readouterr()
    got = main(list(args))
    out, err = capsys.readouterr()
    assert got == code and "Traceback" not in out + err, f"ember {' '.join(args)} exited {got}:\n{out}\n{err}"
    return out, err


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Path, Path]]:
    """(run id, bundle, runs dir) of each family, trained and packaged once."""
    root = tmp_path_factory.mktemp("generative")
    runs = str(root / "runs")
    made = {}
    for family, (config, model) in RECIPES.items():
        assert main(["train", config, f"model.name={model}", *TINY, "--runs-dir", runs]) == 0
        run = sorted((root / "runs").glob(f"{Path(config).stem}-*"))[-1].name
        bundle = root / f"{family}.ember"
        assert main(["package", run, "-o", str(bundle), "--runs-dir", runs]) == 0
        made[family] = (run, bundle, root / "runs")
    return made


def _png(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200 and response.headers["content-type"] == "image/png", response.text
    return Image.open(io.BytesIO(response.content))


@pytest.mark.slow
def test_image_models_serve_png_from_generate(bundles: dict[str, tuple[str, Path, Path]]) -> None:
    _, bundle, _ = bundles["diffusion"]
    app = create_app(ServedModel.from_bundle(open_bundle(bundle)), max_images=8)
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        ask = {"n": 4, "class": 3, "steps": 3, "seed": 1}
        first, again = client.post("/v1/generate", json=ask), client.post("/v1/generate", json=ask)
        assert (
            _png(first).size == (2 * 8 + 3 * 2,) * 2 and first.content == again.content
        )  # a 2x2 grid, seeded
        assert first.headers["x-ember-images"] == "4"
        assert _png(client.post("/v1/generate", json={"n": 1, "steps": 2})).size == (8, 8)
        listed = client.post("/v1/generate", json={"n": 2, "steps": 2, "format": "json"}).json()["images"]
        assert [Image.open(io.BytesIO(base64.b64decode(p))).size for p in listed] == [(8, 8), (8, 8)]
        for body, status, says in (
            ({"n": 9}, 422, "less than or equal to 8"),  # the server's cap
            ({"n": 1, "class": "eleven"}, 422, "neither a class id nor a class name"),
            ({"n": 1, "prompt": "a seven"}, 422, "takes no prompt"),
            ({"n": 1, "colour": 3}, 422, "Extra inputs"),
        ):
            answer = client.post("/v1/generate", json=body)
            assert answer.status_code == status and says in answer.json()["error"], answer.text
        refused = client.post("/v1/predict", json={"inputs": [[[[0.5] * 8] * 8]]})
        assert refused.status_code == 400 and "/v1/generate" in refused.json()["error"]
        metrics = client.get("/metrics").text
        assert "ember_generate_images_total 11.0" in metrics
        assert 'ember_requests_total{code="422",endpoint="generate"} 4.0' in metrics
        assert client.get("/openapi.json").json()["paths"]["/v1/generate"]["post"]["requestBody"]
    _, gan, _ = bundles["gan"]
    with serving(create_app(ServedModel.from_bundle(open_bundle(gan)))) as url:
        taken = httpx.post(f"{url}/v1/generate", json={"n": 1, "class": 2}, timeout=60)
        assert taken.status_code == 422 and "not class-conditional" in taken.json()["error"]
        assert _png(httpx.post(f"{url}/v1/generate", json={"n": 3}, timeout=60)).mode == "L"


@pytest.mark.slow
def test_a_captioner_answers_predict_with_phrases(
    bundles: dict[str, tuple[str, Path, Path]], tmp_path: Path
) -> None:
    _, bundle, _ = bundles["captioner"]
    picture = tmp_path / "digit.png"
    Image.new("L", (8, 8), 128).save(picture)
    with serving(create_app(ServedModel.from_bundle(open_bundle(bundle)))) as url:
        answer = httpx.post(
            f"{url}/v1/predict",
            content=picture.read_bytes(),
            headers={"content-type": "image/png"},
            timeout=60,
        )
        assert answer.status_code == 200 and isinstance(answer.json()["captions"][0], str), answer.text


@pytest.mark.slow
def test_report_check_eval_generate_and_export_say_what_applies(
    bundles: dict[str, tuple[str, Path, Path]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for family, (run, bundle, runs) in bundles.items():
        where = ["--runs-dir", str(runs)]
        _ember(capsys, "report", run, *where)
        page = (runs / run / "report.html").read_text()
        samples = page.split('<section id="samples">')[1].split("</section>")[0]
        assert ("<img" in samples) == (family != "captioner"), (family, samples[:200])
        checked, _ = _ember(capsys, "check", run, *where)
        assert ("imbalance: not applicable" in checked) == (family != "captioner"), checked
        if family == "gan":
            assert "overfitting: not applicable" in checked and "ember score" in checked, checked
        evaluated, _ = _ember(capsys, "eval", run, *where)
        assert ("ember score RUN" in evaluated) == (family != "captioner"), evaluated
        if family == "captioner":
            continue
        grid = tmp_path / f"{family}.png"
        steps = ["--steps", "2"] if family == "diffusion" else []
        made, _ = _ember(capsys, "generate", str(bundle), "-n", "4", *steps, "-o", str(grid))
        assert grid.read_bytes().startswith(b"\x89PNG") and "4 images" in made, made
        onnx = tmp_path / f"{family}.onnx"
        exported, _ = _ember(capsys, "export", str(bundle), "--format", "onnx", "-o", str(onnx))
        assert onnx.is_file() and "max abs error" in exported
    _, err = _ember(
        capsys, "generate", str(bundles["vae"][1]), "--reconstruct", "-o", str(tmp_path / "r.png"), code=2
    )
    assert "give the run that trained it" in err and len(err.strip().splitlines()) == 1

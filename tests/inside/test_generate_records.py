"""`heritage generate`'s record and refusals: class_images.json names the member that drew (whose probabilities
they are), and --diversity, which compares images of one class, is refused with one image per class."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from heritage_cnn.cli.main import main
from heritage_cnn.models.checkpoint import load_checkpoint, save_ensemble


@pytest.fixture(scope="module")
def pair(tiny_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ensemble of two tiny networks: the tiny run's and another of the same shape, untrained."""
    single = load_checkpoint(tiny_run.checkpoint)
    torch.manual_seed(5)
    other = replace(single, model=type(single.model)(single.model.config).eval(), open_set=None)
    stem = tmp_path_factory.mktemp("pair") / "pair"
    save_ensemble(stem, [replace(single, open_set=None), other], ["a", "b"], ["train a", "train b"])
    return stem


def _generate(model: Path, out: Path, *extra: str) -> dict:
    argv = ["generate", "--model", str(model), "--class", "2", "--n", "1", "--steps", "2", "--out", str(out), "-q"]
    assert main([*argv, *extra]) == 0
    return json.loads((out / "class_images.json").read_text())


def test_the_record_names_the_member_whose_probabilities_it_holds(
    tiny_run, pair: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The QA case: `--member 1` wrote the model's path and no member, so member 1's probabilities read as the
    ensemble's and the run could not be drawn again from its JSON."""
    from heritage_cnn.inside.synthesis.draw import classify

    record = _generate(pair, tmp_path / "one", "--member", "1")
    assert record["model"] == str(pair.with_suffix(".safetensors")) and record["member"] == 1
    assert record["probabilities_of"].startswith("member 1 of the model")
    assert (record["seed"], record["size"], record["per_class"]) == (0, 64, 1)
    both = _generate(pair, tmp_path / "both")
    assert both["member"] is None and both["probabilities_of"] == "the model's 2 networks together (their mean softmax)"
    assert both["images"][0]["probability"] != record["images"][0]["probability"]
    alone = _generate(Path(tiny_run.checkpoint), tmp_path / "alone")
    assert alone["member"] is None and alone["probabilities_of"] == "the model (one network)"
    # the recorded probability is member 1's for the image drawn (as far as the PNG's 8 bits let it be read back)
    pixels = np.array(Image.open(tmp_path / "one" / record["images"][0]["file"]).convert("RGB"))
    image = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    probability = classify(load_checkpoint(pair).member(1), image)[0, 2].item()
    assert probability == pytest.approx(record["images"][0]["probability"], abs=0.02)


def test_diversity_with_one_image_per_class_is_refused_but_not_by_default(
    tiny_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The QA case: `--diversity 0.5 --n 1` drew byte-identical images to those without it, and said nothing."""
    out = tmp_path / "refused"
    argv = ["generate", "--model", str(tiny_run.checkpoint), "--class", "2", "--n", "1", "--steps", "2", "-q"]
    assert main([*argv, "--out", str(out), "--diversity", "0.5"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("heritage: error: --diversity 0.5: "), err
    assert "--n 2 or more" in err and not out.exists()
    assert main([*argv, "--out", str(tmp_path / "default")]) == 0  # the default with --n 1: nothing typed, no refusal
    assert json.loads((tmp_path / "default" / "class_images.json").read_text())["settings"]["diversity"] == 0.0
    argv[argv.index("1")] = "2"
    assert main([*argv, "--out", str(tmp_path / "two"), "--diversity", "0.5"]) == 0
    assert json.loads((tmp_path / "two" / "class_images.json").read_text())["settings"]["diversity"] == 0.5

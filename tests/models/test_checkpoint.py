"""Checkpoints: recognised by parsing, validated as a whole, written as pairs that cannot mix."""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from conftest import refused_in_one_line as _refused
from heritage_cnn.base.io import CheckpointError, load_tensors
from heritage_cnn.models.checkpoint import load_checkpoint, save_checkpoint, weights_generation
from heritage_cnn.models.metadata import FORMAT


def _copy(tiny_run, folder: Path, name: str = "m") -> tuple[Path, dict]:
    """The tiny run's last checkpoint copied to `folder/name.*`; returns (stem, its JSON)."""
    source = tiny_run.out / "last"
    stem = folder / name
    stem.with_suffix(".safetensors").write_bytes(source.with_suffix(".safetensors").read_bytes())
    meta = json.loads(source.with_suffix(".json").read_text())
    stem.with_suffix(".json").write_text(json.dumps(meta))
    return stem, meta


def test_a_safetensors_file_starting_with_0x80_loads(tiny_run, tmp_path: Path) -> None:
    """A header length of 128 mod 256 makes the first byte 0x80, like a pickle's: decided by parsing."""
    stem, meta = _copy(tiny_run, tmp_path)
    state = load_tensors(stem.with_suffix(".safetensors"))
    for pad in range(400):
        data = save(state, metadata={"format": FORMAT, "generation": meta["generation"], "pad": "x" * pad})
        if data[0] == 0x80:
            break
    assert data[0] == 0x80
    stem.with_suffix(".safetensors").write_bytes(data)
    loaded = load_checkpoint(stem)
    weights = {k: v for k, v in state.items() if not k.startswith("openset.")}  # the rest: `open_set`'s statistics
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in weights.items())
    assert torch.equal(loaded.open_set.stats[0].whitening, state["openset.mahalanobis.whitening"])


def test_pickles_and_torch_save_files_are_refused_in_one_line(tiny_run, tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.safetensors"  # a pickle that runs a command when unpickled, beside a valid JSON
    evil.write_bytes(pickle.dumps(Evil()))
    evil.with_suffix(".json").write_bytes(tiny_run.checkpoint.with_suffix(".json").read_bytes())
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()  # refused before anything was unpickled
    raw = tmp_path / "raw.safetensors"
    raw.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=2))
    zipped = tmp_path / "zipped.safetensors"
    torch.save({"w": torch.zeros(3)}, zipped)
    legacy = tmp_path / "legacy.safetensors"
    torch.save({"w": torch.zeros(3)}, legacy, _use_new_zipfile_serialization=False)
    for path in (raw, zipped, legacy):
        with pytest.raises(CheckpointError, match="pickle") as caught:
            load_tensors(path)
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x07" * 100)
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_tensors(garbage)


@pytest.mark.parametrize(
    ("field", "edit"),
    [
        ("classes", lambda m: m.update(classes=["../x", *m["classes"][1:]])),
        ("classes", lambda m: m.update(classes=["/etc", *m["classes"][1:]])),
        ("classes", lambda m: m.update(classes=["a\\b", *m["classes"][1:]])),
        ("classes", lambda m: m.update(classes=["..", *m["classes"][1:]])),
        ("classes", lambda m: m.update(classes=["a\x00b", *m["classes"][1:]])),
        ("classes", lambda m: m.update(classes=["tab\there", *m["classes"][1:]])),
        ("classes", lambda m: m.update(classes=list(range(len(m["classes"]))))),
        ("classes", lambda m: m.update(classes=["same"] * len(m["classes"]))),
        ("classes", lambda m: m.update(classes=[])),
        ("classes", lambda m: m.update(classes=["", *m["classes"][1:]])),
        ("normalisation", lambda m: m.update(normalisation={"mean": [0.5, 0.5], "std": [0.2, 0.2, 0.2]})),
        ("normalisation", lambda m: m.update(normalisation={"mean": [0.5] * 3, "std": [0.2, 0.0, 0.2]})),
        ("normalisation", lambda m: m.update(normalisation={"mean": [math.nan] * 3, "std": [0.2] * 3})),
        ("normalisation", lambda m: m.update(normalisation={"mean": ["0.5"] * 3, "std": [0.2] * 3})),
        ("normalisation", lambda m: m.pop("normalisation")),
        ("image_size", lambda m: m.update(image_size=0)),
        ("image_size", lambda m: m.update(image_size=100_000)),
        ("image_size", lambda m: m.update(image_size="64")),
        ("image_size", lambda m: m.update(image_size=4)),  # too small for its stages of pooling
        ("model_config", lambda m: m["model_config"].update(widths=[100_000, 100_000])),
        ("model_config", lambda m: m["model_config"].update(widths=[8, 16, 32])),
        ("model_config", lambda m: m["model_config"].update(widths=["8", 16])),
        ("model_config", lambda m: m["model_config"].update(blocks=[0, 1])),
        ("model_config", lambda m: m["model_config"].update(hidden=-1)),
        ("model_config", lambda m: m["model_config"].update(dropout=True)),
        ("model_config", lambda m: m["model_config"].update(input_scale=1e9)),
        ("model_config", lambda m: m["model_config"].update(input_scale="1.5")),
        ("model_config", lambda m: m["model_config"].update(evil=1)),
        ("model_config", lambda m: m.update(model_config=[8, 16])),
        ("format", lambda m: m.update(format="something/2")),
    ],
)
def test_edited_metadata_is_refused_in_one_line_naming_the_field(tiny_run, tmp_path: Path, field, edit) -> None:
    stem, meta = _copy(tiny_run, tmp_path)
    edit(meta)
    stem.with_suffix(".json").write_text(json.dumps(meta))
    message = _refused(stem, "heritage-cnn checkpoint" if field == "format" else field)
    assert "Traceback" not in message


def test_an_enlarging_network_loads_with_its_scale(tiny_run, tmp_path: Path) -> None:
    """input_scale is part of the network (no weights of its own), so it travels in model_config."""
    stem, meta = _copy(tiny_run, tmp_path)
    meta["model_config"]["input_scale"] = 1.5
    stem.with_suffix(".json").write_text(json.dumps(meta))
    loaded = load_checkpoint(stem)
    assert loaded.model.config.input_scale == 1.5 and isinstance(loaded.model.resize, torch.nn.Upsample)
    assert loaded.model(torch.zeros(1, 3, 64, 64)).shape == (1, len(loaded.classes))


def test_deeply_nested_json_is_one_line(tiny_run, tmp_path: Path) -> None:
    stem, _ = _copy(tiny_run, tmp_path)
    stem.with_suffix(".json").write_text("[" * 200_000 + "]" * 200_000)
    _refused(stem, "nested")


@pytest.mark.parametrize("bad", ["integer", "nan", "inf"])
def test_integer_or_non_finite_weights_are_refused(tiny_run, tmp_path: Path, bad: str) -> None:
    stem, meta = _copy(tiny_run, tmp_path)
    state = load_tensors(stem.with_suffix(".safetensors"))
    name = "head.fc2.weight"
    if bad == "integer":
        state[name] = state[name].round().to(torch.int32)
    else:
        state[name][0, 0] = math.nan if bad == "nan" else math.inf
    generation = weights_generation(state)  # a consistent pair, so that only the tensor is wrong
    stem.with_suffix(".safetensors").write_bytes(save(state, metadata={"format": FORMAT, "generation": generation}))
    stem.with_suffix(".json").write_text(json.dumps({**meta, "generation": generation}))
    _refused(stem, name)


def test_halves_of_different_saves_are_refused_and_old_pairs_still_load(tiny_run, tmp_path: Path) -> None:
    first = load_checkpoint(tiny_run.out / "last")
    save_checkpoint(tmp_path / "a", first)
    with torch.no_grad():
        first.model.head.fc2.bias.add_(1.0)
    save_checkpoint(tmp_path / "b", first)
    ids = [json.loads((tmp_path / f"{n}.json").read_text())["generation"] for n in "ab"]
    assert len(set(ids)) == 2 and all(len(i) == 16 for i in ids)
    (tmp_path / "a.json").write_bytes((tmp_path / "b.json").read_bytes())
    message = _refused(tmp_path / "a", "different saves")
    assert ids[0] in message and ids[1] in message
    # a pair from before generations (neither half has one) still loads, like the shipped model
    old_meta = json.loads((tmp_path / "b.json").read_text())
    del old_meta["generation"]
    (tmp_path / "old.json").write_text(json.dumps(old_meta))
    (tmp_path / "old.safetensors").write_bytes(save(load_tensors(tmp_path / "b.safetensors")))
    assert torch.equal(load_checkpoint(tmp_path / "old").model.head.fc2.bias, first.model.head.fc2.bias)
    shipped = load_checkpoint()
    assert len(shipped.classes) == 10 and shipped.image_size == 64


def test_a_run_folder_stands_for_its_last_checkpoint(tiny_run) -> None:
    from_folder, from_pair = load_checkpoint(tiny_run.out), load_checkpoint(tiny_run.out / "last")
    assert from_folder.path == from_pair.path
    assert all(
        torch.equal(a, b) for a, b in zip(from_folder.model.parameters(), from_pair.model.parameters(), strict=True)
    )


def test_a_missing_model_says_which_of_the_three_forms_went_wrong(tiny_run, tmp_path: Path) -> None:
    """A folder without `last`, a metadata file without its weights, another file and a typo each get their own
    one line."""
    unfinished = tmp_path / "run"
    unfinished.mkdir()
    with pytest.raises(CheckpointError, match=r"run: a folder without last\.safetensors") as folder:
        load_checkpoint(unfinished)
    stem, _ = _copy(tiny_run, tmp_path)
    stem.with_suffix(".safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"m\.safetensors: missing \(its metadata is there") as half:
        load_checkpoint(stem.with_suffix(".json"))
    with pytest.raises(CheckpointError, match=r"no such checkpoint; .* one of: default, fast") as typo:
        load_checkpoint(tmp_path / "defualt")
    assert str(tmp_path / "defualt") in str(typo.value)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff")
    with pytest.raises(CheckpointError, match=r"photo\.jpg: not a checkpoint; .* one of: default, fast") as other:
        load_checkpoint(photo)
    assert all("\n" not in str(e.value) for e in (folder, half, typo, other))


def test_non_finite_weights_are_never_written(tiny_run, tmp_path: Path) -> None:
    checkpoint = load_checkpoint(tiny_run.out)
    save_checkpoint(tmp_path / "good", checkpoint)
    before = (tmp_path / "good.safetensors").read_bytes()
    with torch.no_grad():
        checkpoint.model.head.fc1.weight[0, 0] = math.nan
    with pytest.raises(CheckpointError, match="NaN"):
        save_checkpoint(tmp_path / "good", checkpoint)
    assert (tmp_path / "good.safetensors").read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def _consistent(stem: Path, state: dict, meta: dict) -> None:
    """Write `state` and `meta` as a pair whose halves carry the generation of `state`: only the edit is wrong."""
    generation = weights_generation(state)
    stem.with_suffix(".safetensors").write_bytes(save(state, metadata={"format": FORMAT, "generation": generation}))
    stem.with_suffix(".json").write_text(json.dumps({**meta, "generation": generation}))


@pytest.mark.parametrize(
    ("field", "edit"),
    [
        ("classes", lambda c: c.classes.pop()),  # 9 names for a network with 10 outputs
        ("classes", lambda c: c.classes.__setitem__(1, "tab\there")),
        ("normalisation", lambda c: c.std.__setitem__(1, 0.0)),
        ("image_size", lambda c: setattr(c, "image_size", 4)),
        ("image_size", lambda c: setattr(c, "image_size", 2)),  # under the stages' pooling too
    ],
)
def test_a_pair_the_loader_would_refuse_is_never_written(tiny_run, tmp_path: Path, field, edit) -> None:
    """The save runs the loader's validation on what it is about to write, before either file is touched: a good
    pair is never replaced by one that cannot be read back."""
    checkpoint = load_checkpoint(tiny_run.out)
    weights = save_checkpoint(tmp_path / "good", checkpoint)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    checkpoint.classes = list(checkpoint.classes)
    checkpoint.std = list(checkpoint.std)
    edit(checkpoint)
    with pytest.raises(CheckpointError) as caught:
        save_checkpoint(tmp_path / "good", checkpoint)
    message = str(caught.value)
    assert message.startswith(f"{weights}: not written: {field}: ") and "\n" not in message, message
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # both halves, and no temporary file
    assert load_checkpoint(tmp_path / "good").classes == load_checkpoint(tiny_run.out).classes


def _tensor_bytes(path: Path, name: str) -> tuple[int, int]:
    """Where tensor `name`'s bytes lie in the safetensors file `path`: (first, end)."""
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    first, end = json.loads(data[8 : 8 + length])[name]["data_offsets"]
    return 8 + length + first, 8 + length + end


@pytest.mark.parametrize("damage", ["flipped bit", "scaled by 100"])
def test_weights_edited_after_the_save_are_refused(tiny_run, tmp_path: Path, damage: str) -> None:
    """The generation both halves record is computed again from the tensors read: a flipped bit or a rescaled
    tensor under an untouched header is refused (with it the none-of-these record fitted for the saved weights)."""
    stem, meta = _copy(tiny_run, tmp_path)
    weights = stem.with_suffix(".safetensors")
    assert load_checkpoint(stem).open_set is not None
    if damage == "flipped bit":
        first, _ = _tensor_bytes(weights, "head.fc2.weight")
        data = bytearray(weights.read_bytes())
        data[first] ^= 1  # the lowest bit of the first float32's mantissa: still a finite weight
        weights.write_bytes(bytes(data))
    else:
        state = load_tensors(weights)
        state["head.fc2.weight"] = state["head.fc2.weight"] * 100
        weights.write_bytes(save(state, metadata={"format": FORMAT, "generation": meta["generation"]}))
    message = _refused(stem, "edited or damaged after the save")
    assert str(weights) in message and meta["generation"] in message


def test_a_negative_running_variance_is_refused_when_loaded_and_never_written(tiny_run, tmp_path: Path) -> None:
    stem, meta = _copy(tiny_run, tmp_path)
    state = load_tensors(stem.with_suffix(".safetensors"))
    name = next(k for k in state if k.endswith("running_var"))
    state[name][0] = -1.0  # finite, but its square root is not: every output would be NaN
    _consistent(stem, state, meta)
    assert "negative variance" in _refused(stem, name)
    checkpoint = load_checkpoint(tiny_run.out)
    with torch.no_grad():
        checkpoint.model.get_buffer(name)[0] = -1.0
    with pytest.raises(CheckpointError, match=f"not written: tensor {name} holds a negative variance"):
        save_checkpoint(tmp_path / "never", checkpoint)
    assert not list(tmp_path.glob("never*"))


def test_missing_and_unexpected_tensors_are_named(tiny_run, tmp_path: Path) -> None:
    stem, meta = _copy(tiny_run, tmp_path)
    state = load_tensors(stem.with_suffix(".safetensors"))
    state["head.fc2.extra"] = state.pop("head.fc2.bias")
    _consistent(stem, state, meta)
    message = _refused(stem, "missing tensors head.fc2.bias")
    assert "unexpected tensors head.fc2.extra" in message and "do not match the model config" in message
    state = load_tensors(tiny_run.checkpoint)
    state["head.fc2.bias"] = state["head.fc2.bias"][:-1]
    _consistent(stem, state, meta)
    _refused(stem, f"tensor head.fc2.bias is ({len(meta['classes']) - 1},), expected ({len(meta['classes'])},)")

"""Shared fixtures: synthetic photo folders drawn by the tests themselves (no dataset images)."""

from __future__ import annotations

import colorsys
import contextlib
import ctypes
import hashlib
import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bf16-autocast",
        action="store_true",
        help="compute as a CPU with bf16 in hardware does (a Xeon with AVX-512 BF16 or AMX): the library's autocast "
        "switched on whatever this CPU has (PyTorch emulates bf16 where the kernels lack it; slower). `make test` "
        "runs the inference and model tests so on a CPU without bf16, as it runs the numerics tests under the AVX2 "
        "cap on one with it",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--bf16-autocast"):
        # the one decision every autocast in the library goes through (`mixed_precision`), in this process and, by
        # bf16_site/sitecustomize.py, in every Python process a test starts (a served page checked against this
        # process's answer must be computed the same way)
        from heritage_cnn.base import devices

        devices.cpu_has_native_bf16 = lambda: True
        site = str(Path(__file__).parent / "bf16_site")
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")]))


CLASSES = [
    "altar",
    "apse",
    "bell_tower",
    "column",
    "dome(inner)",
    "dome(outer)",
    "flying buttress",
    "gargoyle",
    "stained_glass",
    "vault",
]


def draw(label: int, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A noisy picture: the class sets the colour and stripe frequency, a random smooth pattern
    makes every picture a different scene (so perceptual hashes do not call them duplicates)."""
    hue = label / len(CLASSES)
    base = np.array(colorsys.hsv_to_rgb(hue, 0.8, 0.9)) * 255
    yy, xx = np.mgrid[0:size, 0:size] / size
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (label + 2) * (xx * np.cos(label) + yy * np.sin(label)))
    coarse = rng.random((5, 5))
    scene = np.kron(coarse, np.ones((size // 4 + 1, size // 4 + 1)))[:size, :size]
    shade = 0.35 + 0.35 * scene + 0.3 * stripes
    image = base[None, None, :] * shade[..., None]
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


LEFT, RIGHT = 0, 5  # red and cyan: the two synthetic classes furthest apart in hue (element map tests)


def mosaic(labels: list[int], enlarge: int = 8, seed: int = 3) -> np.ndarray:
    """Synthetic class pictures side by side, enlarged `enlarge` times (nearest: the pictures' own pixels, as a
    photo at a survey camera's resolution would hold one element per region)."""
    rng = np.random.default_rng(seed)
    row = np.concatenate([draw(label, rng) for label in labels], axis=1)
    return np.kron(row, np.ones((enlarge, enlarge, 1), dtype=np.uint8))


def declared_png(width: int, height: int) -> bytes:
    """A PNG of a few hundred bytes whose header declares width x height pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 4096)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def make_dataset(
    root: Path, per_class: int = 20, seed: int = 0, classes: list[str] = CLASSES, fmt: str = "png"
) -> Path:
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(draw(label, rng)).save(folder / f"{i:03d}.{fmt}")
    return root


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten classes x 24 images in a bare class-folder root."""
    return make_dataset(tmp_path_factory.mktemp("synthetic"), per_class=24)


@pytest.fixture(scope="session")
def kaggle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Kaggle layout: train/ and test/ with the same ten classes."""
    root = tmp_path_factory.mktemp("kaggle")
    make_dataset(root / "train", per_class=24, seed=1)
    make_dataset(root / "test", per_class=6, seed=2)
    return root


TINY = {"widths": (8, 16), "blocks": (1, 1), "hidden": 32, "stem_kernel": 3}


# ---- `heritage teach`: a parent that knows nine of the synthetic classes, the tenth taught as new -------------------

NEW = "vault"  # the class the parent never saw: the last of the synthetic ten
NEW_LABEL = CLASSES.index(NEW)


def _photos(root: Path, label: int, count: int, seed: int) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(draw(label, rng)).save(root / f"{i:03d}.png")
    return root


def train_nine(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory, epochs: int = 8) -> Path:
    """A tiny network trained on nine of the synthetic classes (not `vault`), float32, with its none-of-these fit."""
    from heritage_cnn.models.network import ModelConfig
    from heritage_cnn.training.config import TrainConfig
    from heritage_cnn.training.loop import train

    data = tmp_path_factory.mktemp("nine") / "data"
    shutil.copytree(synthetic_root, data, ignore=shutil.ignore_patterns(NEW))
    out = tmp_path_factory.mktemp("nine_run")
    config = TrainConfig(
        data=str(data),
        out=str(out),
        epochs=epochs,
        batch_size=32,
        lr=1e-2,
        model=ModelConfig(**TINY, num_classes=9),
        amp=False,
        progress=False,
    )
    return train(config, log=lambda _: None).checkpoint


def new_class_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 photos of the new class, drawn apart from the training set (another seed)."""
    from heritage_cnn.inference.teach_photos import MIN_NEW_PHOTOS

    root = tmp_path_factory.mktemp("new")
    _photos(root / NEW, NEW_LABEL, MIN_NEW_PHOTOS, seed=11)
    return root


def _fresh(label: int, count: int = 24, seed: int = 99) -> np.ndarray:
    rng = np.random.default_rng(seed + label)
    return np.stack([draw(label, rng) for _ in range(count)])


def _nine_data(synthetic_root: Path, tmp_path: Path) -> Path:
    data = tmp_path / "nine_data"
    shutil.copytree(synthetic_root, data, ignore=shutil.ignore_patterns(NEW))
    return data


@pytest.fixture(scope="session")
def nine(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The parent of the teach tests (`train_nine`), trained once: no test may change it (they check that)."""
    return train_nine(synthetic_root, tmp_path_factory)


@pytest.fixture(scope="session")
def new_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return new_class_folder(tmp_path_factory)


def file_digest(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes: that a file was left exactly as it was."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """Every test starts with the process's thread count, whatever the one before set (results that depend
    on the order of tests are not results)."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """A tiny model trained for a few seconds on the synthetic set (shared by several tests). It trains in
    float32 whatever the CPU (amp=False): with bf16 where the CPU has it natively, the model, and every test
    tuned to it, would differ between CPU families. Mixed precision has tests of its own."""
    from heritage_cnn.models.network import ModelConfig
    from heritage_cnn.training.config import TrainConfig
    from heritage_cnn.training.loop import train

    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(
        data=str(synthetic_root),
        out=str(out),
        epochs=8,
        batch_size=32,
        lr=1e-2,
        model=ModelConfig(**TINY),
        amp=False,
        progress=False,
    )
    return train(config, log=lambda _: None)


@pytest.fixture(scope="session")
def tiny_mahalanobis(tiny_run, synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run with a Mahalanobis none-of-these record instead of `heritage train`'s default energy: its scale
    (thousands of units between a picture's tiles and tiles straddling two pictures) is what the element map's tests
    set their threshold by."""
    from heritage_cnn.apps.evaluation import fit_none_of_these
    from heritage_cnn.models.checkpoint import load_checkpoint

    out = tmp_path_factory.mktemp("mahalanobis") / "tiny"
    checkpoint = load_checkpoint(tiny_run.checkpoint)
    return fit_none_of_these(checkpoint, synthetic_root, out, score="mahalanobis", log=lambda _: None)


@pytest.fixture(scope="session")
def old_checkpoint(tiny_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run's network as checkpoints were written before the none-of-these record: no `open_set` in its
    JSON, no statistics beside its weights."""
    from dataclasses import replace

    from heritage_cnn.models.checkpoint import load_checkpoint, save_checkpoint

    checkpoint = replace(load_checkpoint(tiny_run.checkpoint), open_set=None)
    return save_checkpoint(tmp_path_factory.mktemp("old") / "old", checkpoint)


# --------------------------------------------------------------------------------------------
# A real browser: Debian's headless Chromium driven by Selenium (the page and the report tests)
# --------------------------------------------------------------------------------------------


def find_chromium() -> tuple[str, str] | None:
    """Debian's chromium and chromedriver; installed with apt-get when missing and running as root."""
    browser, driver = shutil.which("chromium") or "/usr/bin/chromium", "/usr/bin/chromedriver"
    if not (Path(browser).exists() and Path(driver).exists()) and hasattr(os, "geteuid") and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"],
            capture_output=True,
            timeout=600,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    return (browser, driver) if Path(browser).exists() and Path(driver).exists() else None


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    found = find_chromium()
    if found is None:
        pytest.skip(
            "no /usr/bin/chromium + /usr/bin/chromedriver, and `apt-get install chromium chromium-driver` failed"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1100,1250"):  # fmt: skip
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=found[1]))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def classifier(tiny_run):
    """The tiny run's network, ready for photos (predict and sort tests)."""
    from heritage_cnn.inference.classifier import Classifier

    return Classifier.load(tiny_run.checkpoint)


def make_survey(synthetic_root: Path, root: Path) -> Path:
    """A messy survey folder: photos from a few classes in nested folders, a duplicate name, a broken file."""
    (root / "day1" / "nave").mkdir(parents=True)
    (root / "day2").mkdir()
    for i, name in enumerate(["altar", "gargoyle", "stained_glass"]):
        shutil.copy(synthetic_root / name / "000.png", root / "day1" / f"{name}.png")
        shutil.copy(synthetic_root / name / "001.png", root / "day2" / f"{name}.png")  # same name, other photo
        Image.open(synthetic_root / name / "002.png").convert("RGB").save(
            root / "day1" / "nave" / f"{name}_{i}.jpg", quality=95
        )
    (root / "day2" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    return root


def refused_in_one_line(stem: Path, field: str) -> str:
    """load_checkpoint(stem) is refused with one line that names the file and `field`; returns the message."""
    from heritage_cnn.base.io import CheckpointError
    from heritage_cnn.models.checkpoint import load_checkpoint

    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(stem)
    message = str(caught.value)
    assert "\n" not in message and stem.name in message and field in message, message
    return message


@contextlib.contextmanager
def cli_server(*args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`heritage serve ARGS --port 0` in a subprocess (port 0: the server prints the one it got); yields (its URL, the
    process, whose stdout goes on after the address line) and stops it after."""
    command = [sys.executable, "-m", "heritage_cnn.cli", "serve", *args, "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 90)
        line = process.stdout.readline() if ready else ""
        if "http://127.0.0.1:" not in line:
            process.kill()
            pytest.fail(f"heritage serve did not start: {line}{process.stdout.read()}")
        yield line.split()[2], process
    finally:
        process.terminate()
        process.wait(timeout=20)


@contextlib.contextmanager
def server_process(create_args: str, run_args: str = "") -> Iterator[tuple[int, subprocess.Popen]]:
    """The library's server (create_app + listen + run) in its own process on a free loopback port:
    `create_app(<create_args>)`, `run(app, sock<run_args>)`; yields (port, process) and stops it after."""
    script = (
        "from heritage_cnn.apps.serve import create_app, listen, run\n"
        "sock = listen('127.0.0.1', 0)\n"
        f"app = create_app({create_args})\n"
        "print(sock.getsockname()[1], flush=True)\n"
        f"run(app, sock{run_args})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 90)
        line = process.stdout.readline().strip() if ready else ""
        if not line.isdigit():
            process.kill()
            pytest.fail(f"the server did not start: {line!r}")
        yield int(line), process
    finally:
        process.terminate()
        process.wait(timeout=20)


# --------------------------------------------------------------------------------------------
# Permissions that bind root too
# --------------------------------------------------------------------------------------------


def _drop_file_permission_override() -> None:
    """In the child, before exec: leave root's CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH out of the bounding set,
    so the command runs as root (it can read the package wherever the checkout is) but chmod 000 binds it."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH (linux/capability.h)
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: needs CAP_SETPCAP, which root has
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def without_permission_override() -> dict:
    """subprocess.run arguments under which a chmod 000 folder is unreadable: none for a plain user; for root
    (CI, containers), root without the capabilities that override file permissions (test: such a child cannot
    list a chmod 000 folder). Skips only where even that is impossible (no CAP_SETPCAP)."""
    if os.geteuid() != 0:
        return {}
    probe = Path(tempfile.mkdtemp(prefix="locked-"))
    try:
        probe.chmod(0)
        result = subprocess.run(
            [sys.executable, "-c", f"import os; os.listdir({str(probe)!r})"],
            capture_output=True,
            preexec_fn=_drop_file_permission_override,
            timeout=60,
        )
    except subprocess.SubprocessError as error:  # prctl refused in the child
        pytest.skip(f"root cannot drop CAP_DAC_OVERRIDE here ({error}), so it reads chmod 000 folders")
    finally:
        probe.chmod(0o700)
        probe.rmdir()
    if b"PermissionError" not in result.stderr:
        pytest.skip("root still reads chmod 000 folders without CAP_DAC_OVERRIDE here")
    return {"preexec_fn": _drop_file_permission_override}

"""Feed the `heritage` command every kind of bad input we know of and print what the user sees.

    python benchmarks/bad_inputs.py [--model CKPT]   # writes benchmarks/bad_inputs.md

Each case builds its bad input in a temporary folder, runs the real command in a subprocess, and
records the exit code and the first line of what it printed (stderr first). The table in the README
is this script's output.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent


def photo(seed: int = 0, size: tuple[int, int] = (64, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def run(args: list[str]) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "heritage_cnn.cli", *args], capture_output=True, text=True, errors="replace", timeout=600
    )
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    keys = ("skipped", "error", "could not", "mismatch")
    interesting = [line for line in lines if any(key in line for key in keys)]
    if not interesting and result.returncode == 0 and len(lines) > 1:  # a prediction table: show its first row
        interesting = [" ".join(lines[1].split())]
    return result.returncode, (interesting or lines or [""])[0].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint (default: the shipped model)")
    args = parser.parse_args()
    model = ["--model", args.model] if args.model else []
    tmp = Path(tempfile.mkdtemp(prefix="bad-inputs-"))
    rows: list[tuple[str, int, str]] = []

    def case(kind: str, command: list[str]) -> None:
        code, line = run(command)
        line = line.replace(str(tmp), "…")
        rows.append((kind, code, line))
        print(f"{kind}: exit {code}: {line}", flush=True)

    def one_file(name: str, data: bytes | None = None, image: Image.Image | None = None, **save: object) -> Path:
        folder = tmp / name.replace(".", "_")
        folder.mkdir()
        path = folder / name
        if image is not None:
            image.save(path, **save)
        else:
            path.write_bytes(data or b"")
        return path

    buffer = io.BytesIO()
    photo(size=(400, 300)).save(buffer, format="JPEG")
    case("truncated JPEG", ["predict", *model, str(one_file("truncated.jpg", buffer.getvalue()[:3000]))])
    case("zero-byte file", ["predict", *model, str(one_file("empty.jpg", b""))])
    case("random bytes named .jpg", ["predict", *model, str(one_file("noise.jpg", os.urandom(5000)))])
    case("text file named .png", ["predict", *model, str(one_file("notes.png", b"field notes, day 3"))])
    bomb = one_file("bomb.png", image=Image.new("1", (12_000, 12_000)))
    case("PNG bomb (144 MP declared)", ["predict", *model, str(bomb)])
    case("CMYK JPEG", ["predict", *model, str(one_file("cmyk.jpg", image=photo().convert("CMYK")))])
    sixteen = Image.fromarray(np.full((80, 120), 40_000, dtype=np.uint16))
    case("16-bit greyscale PNG", ["predict", *model, str(one_file("deep.png", image=sixteen))])
    palette = photo().convert("P")
    case(
        "palette PNG with transparency",
        ["predict", *model, str(one_file("palette.png", image=palette, transparency=0))],
    )
    frames = [photo(i) for i in range(3)]
    case(
        "animated GIF",
        ["predict", *model, str(one_file("anim.gif", image=frames[0], save_all=True, append_images=frames[1:]))],
    )
    exif = photo().getexif()
    exif[0x0112] = 6
    case("EXIF-rotated photo", ["predict", *model, str(one_file("rotated.jpg", image=photo(), exif=exif))])
    case(
        "TIFF, WebP, BMP",
        [
            "predict",
            *model,
            str(one_file("a.tif", image=photo())),
            str(one_file("b.webp", image=photo())),
            str(one_file("c.bmp", image=photo())),
        ],
    )
    loop = tmp / "loop"
    (loop / "apse").mkdir(parents=True)
    photo().save(loop / "apse" / "a.png")
    os.symlink(loop, loop / "apse" / "again")
    case("symlink loop in a folder", ["predict", *model, str(loop)])
    odd = tmp / "odd"
    odd.mkdir()
    photo().save(os.fsencode(odd) + b"/caf\xe9.png")
    case("non-UTF-8 file name", ["predict", *model, "--format", "csv", str(odd)])
    case("missing file", ["predict", *model, str(tmp / "nowhere.jpg")])
    (tmp / "empty_dataset").mkdir()
    case("empty dataset folder", ["evaluate", *model, "--data", str(tmp / "empty_dataset"), "--out", str(tmp / "o1")])
    classes = tmp / "no_images"
    (classes / "apse").mkdir(parents=True)
    (classes / "vault").mkdir()
    case("class folders with no images", ["evaluate", *model, "--data", str(classes), "--out", str(tmp / "o2")])
    other = tmp / "other_classes"
    (other / "castle").mkdir(parents=True)
    photo().save(other / "castle" / "a.png")
    case(
        "folder with classes the model does not know",
        ["evaluate", *model, "--data", str(other), "--out", str(tmp / "o3")],
    )
    mixed = tmp / "mixed"
    for split, name in (("train", "apse"), ("train", "vault"), ("test", "apse"), ("test", "castle")):
        (mixed / split / name).mkdir(parents=True)
        photo().save(mixed / split / name / "a.png")
    case("train and test with different classes", ["data", "check", str(mixed)])
    source = Path(args.model) if args.model else None
    if source is None:
        from heritage_cnn.checkpoint import default_checkpoint_path

        source = default_checkpoint_path()
    meta = source.with_suffix(".json").read_bytes()
    truncated = tmp / "cut.safetensors"
    truncated.write_bytes(source.with_suffix(".safetensors").read_bytes()[:10_000])
    (tmp / "cut.json").write_bytes(meta)
    case("truncated checkpoint", ["predict", "--model", str(truncated), str(bomb)])
    evil = tmp / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    (tmp / "evil.json").write_bytes(meta)
    case("checkpoint that is a pickle", ["predict", "--model", str(evil), str(bomb)])
    config = tmp / "config.safetensors"
    shutil.copy(source.with_suffix(".safetensors"), config)
    (tmp / "config.json").write_bytes(meta.replace(b'"widths": [', b'"widths": [8, '))
    case("checkpoint from another model config", ["predict", "--model", str(config), str(bomb)])
    lonely = tmp / "lonely.safetensors"
    shutil.copy(source.with_suffix(".safetensors"), lonely)
    case("checkpoint without its JSON", ["predict", "--model", str(lonely), str(bomb)])
    case("--epochs 0", ["train", "--data", str(mixed), "--out", str(tmp / "r0"), "--epochs", "0"])
    case("--epochs -3", ["train", "--data", str(mixed), "--out", str(tmp / "r1"), "--epochs", "-3"])
    blocker = tmp / "a_file"
    blocker.write_text("x")
    case(
        "--out that cannot be written",
        ["evaluate", *model, "--data", str(other.parent / "mixed" / "train"), "--out", str(blocker / "sub")],
    )
    case("sort into a folder inside the input", ["sort", *model, str(loop), "--out", str(loop / "sorted")])
    case("unknown --class for generate", ["generate", *model, "--class", "castle", "--out", str(tmp / "g")])
    case(
        "--nproc with a batch that does not split",
        ["train", "--data", str(mixed), "--out", str(tmp / "r2"), "--nproc", "3"],
    )

    lines = ["| bad input | exit | what the user sees |", "|---|---|---|"]
    lines += [f"| {kind} | {code} | `{line.replace('|', '/')}` |" for kind, code, line in rows]
    (HERE / "bad_inputs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Feed the `heritage` command every kind of bad input we know of and check what the user sees.

    python benchmarks/bad_inputs.py [--model CKPT]   # writes benchmarks/bad_inputs.md
    python benchmarks/bad_inputs.py --only "file names"   # the cases whose kind contains the text; prints only

Each case builds its bad input in a temporary folder, runs the real command in a subprocess (with a
timeout, so a command that blocks on a FIFO shows as a failure instead of hanging the script), and
records the exit code, the child's peak memory, the first line of what it printed (stderr first), and
whether the promise held: the expected exit code (2 when nothing could be processed, 0 when good
photos were processed too) and one line naming the bad file. Unreadable folders need a user that
permissions apply to: as root the command runs under `setpriv` as nobody. The cases run three at a time.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from bad_names import name_cases, names_come_back

HERE = Path(__file__).resolve().parent


def photo(seed: int = 0, size: tuple[int, int] = (64, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if os.geteuid() == 0 else []


def run(args: list[str], user: list[str], env: dict[str, str], timeout: float = 300) -> tuple[int, float, str, str]:
    """(exit code, peak memory of the child in MB, everything it printed, its first telling line)."""
    with tempfile.TemporaryFile() as out:
        child = subprocess.Popen(
            [*user, sys.executable, "-m", "heritage_cnn.cli", *args], stdout=out, stderr=out, env=env
        )
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                child.kill()
                pid, status, usage = os.wait4(child.pid, 0)
                status = 124 << 8
                break
            time.sleep(0.05)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    lines = [line for line in text.splitlines() if line.strip() and "Matplotlib" not in line]
    keys = ("skipped", "error", "could not", "mismatch", "folder not read", "unreadable")
    interesting = [line for line in lines if any(key in line for key in keys)]
    if not interesting and child.returncode == 0 and len(lines) > 1:  # a prediction table: show its first row
        interesting = [" ".join(lines[1].split())]
    return child.returncode, usage.ru_maxrss / 1024, text, (interesting or lines or [""])[0].strip()


def dds(pfflags: int, fourcc: int = 0, dxgi: int | None = None, bitcount: int = 0) -> bytes:
    """A 16x16 DirectDraw Surface header with the given pixel format (Pillow recognises it, may not decode it)."""
    header = struct.pack("<3I", 0x1007, 16, 16) + b"\0" * 56 + struct.pack("<4I", 32, pfflags, fourcc, bitcount)
    extra = b"" if dxgi is None else struct.pack("<5I", dxgi, 3, 0, 1, 0)
    return b"DDS " + struct.pack("<I", 124) + header + b"\0" * (120 - len(header)) + extra + b"\0" * 192


def png_header(width: int, height: int) -> bytes:
    """A valid PNG declaring width x height, with a few bytes of pixel data: a few hundred bytes in all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


Case = tuple[str, list[str], int, str | None, bool]  # kind, command, expected exit, the file named, as nobody


class Cases:
    """The cases to run and the bad inputs they read, each built in a folder of its own under `tmp`."""

    def __init__(self, tmp: Path, model: list[str]) -> None:
        self.tmp, self.model, self.items = tmp, model, []

    def add(self, kind: str, command: list[str], expect: int, named: str | None = None, nobody: bool = False) -> None:
        self.items.append((kind, command, expect, named, nobody))

    def predict(self, kind: str, path: Path, expect: int = 0, named: str | None = None, nobody: bool = False) -> None:
        self.add(kind, ["predict", *self.model, str(path)], expect, named, nobody)

    def one_file(self, name: str, data: bytes | None = None, image: Image.Image | None = None, **save: object) -> Path:
        folder = self.tmp / name.replace(".", "_")
        folder.mkdir()
        path = folder / name
        if image is not None:
            image.save(path, **save)
        else:
            path.write_bytes(data or b"")
        return path

    def bad_file(self, kind: str, name: str, data: bytes, expect: int = 2) -> None:
        self.predict(kind, self.one_file(name, data), expect, name)


def undecodable_files(c: Cases) -> Path:
    """Files no decoder can read, or that claim more pixels than the limits allow; returns the PNG bomb."""
    jpeg = encoded(photo(size=(400, 300)), "JPEG")
    c.bad_file("truncated JPEG", "truncated.jpg", jpeg[:3000])
    frame = jpeg.index(b"\xff\xc0") + 5  # the baseline frame header's height and width
    header = (10_000).to_bytes(2, "big") + (11_000).to_bytes(2, "big")
    c.bad_file(
        "JPEG header declaring 110 MP over a 400x300 photo", "sof.jpg", jpeg[:frame] + header + jpeg[frame + 4 :]
    )
    c.bad_file("zero-byte file", "empty.jpg", b"")
    c.bad_file("random bytes named .jpg", "noise.jpg", os.urandom(5000))
    c.bad_file("text file named .png", "notes.png", b"field notes, day 3")
    bomb = c.one_file("bomb.png", image=Image.new("1", (12_000, 12_000)))
    c.predict("PNG bomb (144 MP declared)", bomb, 2, "bomb.png")
    # Formats Pillow recognises but cannot decode (each used to end every long run with a traceback).
    c.bad_file("DDS texture, unimplemented pixel format, named .jpg", "texture.jpg", dds(0x4, fourcc=0x30305858))
    c.bad_file("DDS texture, unimplemented DX10 format", "dx10.jpg", dds(0x4, fourcc=0x30315844, dxgi=2))
    c.bad_file("DDS texture, unknown pixel-format flags", "flags.jpg", dds(0))
    c.bad_file("DDS texture, 32-bit luminance", "lum32.png", dds(0x20000, bitcount=32))
    blp = b"BLP2" + struct.pack("<i", 1) + bytes([9, 0, 0, 0]) + struct.pack("<II", 4, 4) + b"\0" * 160
    c.bad_file("BLP texture, unknown compression, named .png", "blp.png", blp)
    png = bytearray(encoded(photo(), "PNG"))
    png[60] ^= 0xFF
    c.bad_file("PNG with a corrupt data chunk (CRC)", "crc.png", bytes(png))
    text = zlib.compress(b"\0" * 50_000_000)
    ztxt = b"zTXtnote\0\0" + text
    chunk = struct.pack(">I", len(ztxt) - 4) + ztxt + struct.pack(">I", zlib.crc32(ztxt))
    c.bad_file("PNG with a 50 MB zip-bomb text chunk", "ztxt.png", png_header(64, 64)[:33] + chunk + b"\0" * 12)
    tiff = encoded(photo(), "TIFF")
    at = tiff.index(struct.pack("<HHI", 259, 3, 1))
    c.bad_file(
        "TIFF with an unknown compression", "comp.tif", tiff[: at + 8] + struct.pack("<H", 40_000) + tiff[at + 10 :]
    )
    c.bad_file("GIF header without frames", "frameless.gif", b"GIF89a" + struct.pack("<HH", 4000, 4000) + b"\0\0\0;")
    ico = b"\0\0\1\0\1\0" + bytes([16, 16, 0, 0, 1, 0, 32, 0]) + struct.pack("<II", 9999, 22)
    c.bad_file("ICO whose entry points past the end", "icon.jpg", ico)
    c.bad_file("truncated PNG (half)", "half.png", (data := encoded(photo(size=(200, 200)), "PNG"))[: len(data) // 2])
    c.bad_file("truncated GIF", "half.gif", (data := encoded(photo().convert("P"), "GIF"))[: len(data) // 2])
    c.bad_file("truncated WebP", "half.webp", (data := encoded(photo(), "WEBP"))[: len(data) // 2])
    c.bad_file("PNG signature only", "sig.png", b"\x89PNG\r\n\x1a\n")
    c.bad_file("JPEG start marker only", "soi.jpg", b"\xff\xd8\xff")
    # Headers that claim more than the pixels they hold.
    c.bad_file("PNG header claiming 100,000 x 100,000", "claim.png", png_header(100_000, 100_000))
    c.bad_file("PNG header just over the limit (11,000 x 11,000)", "over.png", png_header(11_000, 11_000))
    bmp = (
        b"BM"
        + struct.pack("<IHHI", 0, 0, 0, 54)
        + struct.pack("<IiiHHIIiiII", 40, 1, 2**31 - 1, 1, 24, 0, 0, 0, 0, 0, 0)
    )
    c.bad_file("BMP header claiming 1 x 2,147,483,647", "tall.bmp", bmp)
    return bomb


def unusual_files(c: Cases) -> None:
    """Thin images, files that are not regular files, and files and folders the user may not read."""
    tmp = c.tmp
    # Thin images: used to be resized to 64 x 64N before the centre crop (GBs for a file of a few hundred bytes).
    for width, height in ((1, 100_000), (1, 300_000), (300_000, 1)):
        path = c.one_file(f"thin_{width}x{height}.png", image=Image.new("L", (width, height), 100))
        c.predict(f"thin PNG {width:,} x {height:,} ({path.stat().st_size} bytes)", path)
    pipe = tmp / "fifo" / "photo.jpg"
    pipe.parent.mkdir()
    os.mkfifo(pipe)
    c.predict("FIFO named photo.jpg", pipe, 2, "photo.jpg")
    photo().save(pipe.parent / "good.png")
    c.predict("FIFO next to a good photo (folder)", pipe.parent, 0, "photo.jpg")
    device = tmp / "device" / "zero.jpg"
    device.parent.mkdir()
    os.symlink("/dev/zero", device)
    c.predict("symlink to /dev/zero named .jpg", device, 2, "zero.jpg")
    dangling = tmp / "dangling" / "gone.jpg"
    dangling.parent.mkdir()
    os.symlink(tmp / "nowhere", dangling)
    c.predict("dangling symlink named .jpg", dangling.parent, 2, "gone.jpg")
    # Unreadable folders and files (run as nobody when we are root).
    locked = tmp / "locked_tree"
    (locked / "private").mkdir(parents=True)
    photo().save(locked / "good.png")
    photo(1).save(locked / "private" / "a.png")
    photo(2).save(locked / "secret.png")
    for path in (locked, locked / "private"):
        path.chmod(0o755)
    (locked / "private").chmod(0)
    (locked / "secret.png").chmod(0)
    c.predict("subfolder without read permission", locked, 0, "private", nobody=True)
    c.predict("file without read permission", locked / "secret.png", 2, "secret.png", nobody=True)


def files_that_work(c: Cases) -> Path:
    """Unusual but valid photos, and a missing file; returns a folder holding a symlink loop."""
    c.predict("CMYK JPEG", c.one_file("cmyk.jpg", image=photo().convert("CMYK")))
    sixteen = Image.fromarray(np.full((80, 120), 40_000, dtype=np.uint16))
    c.predict("16-bit greyscale PNG", c.one_file("deep.png", image=sixteen))
    c.predict("32-bit integer TIFF", c.one_file("int.tif", image=photo().convert("I")))
    c.predict("float TIFF", c.one_file("float.tif", image=photo().convert("F")))
    c.predict("LA PNG", c.one_file("la.png", image=photo().convert("LA")))
    c.predict("palette PNG with transparency", c.one_file("palette.png", image=photo().convert("P"), transparency=0))
    frames = [photo(i) for i in range(3)]
    c.predict("animated GIF", c.one_file("anim.gif", image=frames[0], save_all=True, append_images=frames[1:]))
    c.predict("multi-page TIFF", c.one_file("pages.tif", image=frames[0], save_all=True, append_images=frames[1:]))
    exif = photo().getexif()
    exif[0x0112] = 6
    c.predict("EXIF-rotated photo", c.one_file("rotated.jpg", image=photo(), exif=exif))
    exif[0x0112] = 99
    c.predict("EXIF orientation 99 (invalid)", c.one_file("odd_exif.jpg", image=photo(), exif=exif))
    c.predict("1 x 1 pixel PNG", c.one_file("dot.png", image=photo(size=(1, 1))))
    three = [c.one_file(name, image=photo()) for name in ("a.tif", "b.webp", "c.bmp")]
    c.add("TIFF, WebP, BMP", ["predict", *c.model, *map(str, three)], 0)
    loop = c.tmp / "loop"
    (loop / "apse").mkdir(parents=True)
    photo().save(loop / "apse" / "a.png")
    os.symlink(loop, loop / "apse" / "again")
    c.predict("symlink loop in a folder", loop)
    odd = c.tmp / "odd"
    odd.mkdir()
    photo().save(os.fsencode(odd) + b"/caf\xe9.png")
    c.add("non-UTF-8 file name", ["predict", *c.model, "--format", "csv", str(odd)], 0)
    c.predict("missing file", c.tmp / "nowhere.jpg", 2, "nowhere.jpg")
    return loop


def all_bad_files_together(c: Cases) -> None:
    """Nothing lost: every bad single file so far in one folder with three good photos."""
    everything = c.tmp / "everything"
    everything.mkdir()
    for _kind, command, expect, named, _ in list(c.items):
        source = Path(command[-1])
        if expect == 2 and named and command[0] == "predict" and source.is_file() and source.name != "secret.png":
            shutil.copy(source, everything / source.name)
    os.mkfifo(everything / "pipe.jpg")
    for i in range(3):
        photo(10 + i).save(everything / f"good{i}.png")
    c.predict("all the bad files above, with 3 good photos", everything, 0, "pipe.jpg")


def data_set_cases(c: Cases) -> Path:
    """Bad files and bad folders in a data set: data check, train (tiny budget), sort, explain, evaluate; returns a
    small valid data set in the Kaggle layout."""
    tmp, model = c.tmp, c.model
    dataset = tmp / "dataset"
    for label, name in enumerate(("apse", "vault")):
        (dataset / name).mkdir(parents=True)
        for i in range(6):
            photo(20 * label + i).save(dataset / name / f"{i}.png")
    os.mkfifo(dataset / "apse" / "pipe.jpg")
    (dataset / "vault" / "texture.jpg").write_bytes(dds(0x4, fourcc=0x30305858))
    tiny = ["--epochs", "1", "--widths", "8,16", "--batch-size", "8"]
    c.add("data check: FIFO and DDS texture in the data", ["data", "check", str(dataset)], 0, "pipe.jpg")
    train = ["train", "--data", str(dataset), "--out", str(tmp / "t1"), *tiny]
    c.add("train: FIFO and DDS texture in the data", train, 0, "pipe.jpg")
    c.add("sort: FIFO and DDS texture", ["sort", *model, str(dataset), "--out", str(tmp / "sorted")], 0)
    texture = dataset / "vault" / "texture.jpg"
    c.add("explain a DDS texture", ["explain", *model, str(texture), "--out", str(tmp / "x")], 2, "texture.jpg")
    corrupt = tmp / "corrupt_class"
    shutil.copytree(dataset, corrupt, symlinks=True, ignore=lambda d, names: [n for n in names if n == "pipe.jpg"])
    for path in (corrupt / "vault").iterdir():
        path.write_bytes(dds(0x4, fourcc=0x30305858))
    train = ["train", "--data", str(corrupt), "--out", str(tmp / "t2"), *tiny]
    c.add("train: a class whose images are all undecodable", train, 2, "vault")
    shut = tmp / "shut_class"
    shutil.copytree(corrupt, shut)
    for path in [shut, *shut.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    for i in range(6):
        photo(40 + i).save(shut / "vault" / f"{i}.png")
    (shut / "vault").chmod(0)
    train = ["train", "--data", str(shut), "--out", str(tmp / "t3"), *tiny]
    c.add("train: a class folder without read permission", train, 2, "vault", True)
    (tmp / "empty_dataset").mkdir()
    evaluate = ["evaluate", *model, "--data", str(tmp / "empty_dataset"), "--out", str(tmp / "o1")]
    c.add("empty dataset folder", evaluate, 2)
    classes = tmp / "no_images"
    (classes / "apse").mkdir(parents=True)
    (classes / "vault").mkdir()
    c.add("class folders with no images", ["evaluate", *model, "--data", str(classes), "--out", str(tmp / "o2")], 2)
    other = tmp / "other_classes"
    (other / "castle").mkdir(parents=True)
    photo().save(other / "castle" / "a.png")
    evaluate = ["evaluate", *model, "--data", str(other), "--out", str(tmp / "o3")]
    c.add("folder with classes the model does not know", evaluate, 2)
    mixed = tmp / "mixed"
    for split, name in (("train", "apse"), ("train", "vault"), ("test", "apse"), ("test", "castle")):
        (mixed / split / name).mkdir(parents=True)
        photo().save(mixed / split / name / "a.png")
    c.add("train and test with different classes", ["data", "check", str(mixed)], 0)
    return mixed


def checkpoint_cases(c: Cases, checkpoint: str | None, photo_path: Path) -> None:
    """Checkpoints cut short, pickled, of another configuration, or without their JSON."""
    tmp = c.tmp
    if checkpoint is None:
        from heritage_cnn.models.checkpoint import default_checkpoint_path

        source = default_checkpoint_path()
    else:
        source = Path(checkpoint)
    meta = source.with_suffix(".json").read_bytes()
    truncated = tmp / "cut.safetensors"
    truncated.write_bytes(source.with_suffix(".safetensors").read_bytes()[:10_000])
    (tmp / "cut.json").write_bytes(meta)
    c.add("truncated checkpoint", ["predict", "--model", str(truncated), str(photo_path)], 2, "cut.safetensors")
    evil = tmp / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    (tmp / "evil.json").write_bytes(meta)
    c.add("checkpoint that is a pickle", ["predict", "--model", str(evil), str(photo_path)], 2, "evil.safetensors")
    config = tmp / "config.safetensors"
    shutil.copy(source.with_suffix(".safetensors"), config)
    (tmp / "config.json").write_bytes(meta.replace(b'"widths": [', b'"widths": [8, '))
    other = ["predict", "--model", str(config), str(photo_path)]
    c.add("checkpoint from another model config", other, 2, "config.json")
    lonely = tmp / "lonely.safetensors"
    shutil.copy(source.with_suffix(".safetensors"), lonely)
    c.add("checkpoint without its JSON", ["predict", "--model", str(lonely), str(photo_path)], 2, "lonely")


def option_cases(c: Cases, data: Path, loop: Path) -> None:
    """Options out of range, outputs that cannot be written, and requests for more memory than any machine has."""
    tmp, model = c.tmp, c.model
    c.add("--epochs 0", ["train", "--data", str(data), "--out", str(tmp / "r0"), "--epochs", "0"], 2)
    c.add("--epochs -3", ["train", "--data", str(data), "--out", str(tmp / "r1"), "--epochs", "-3"], 2)
    blocker = tmp / "a_file"
    blocker.write_text("x")
    evaluate = ["evaluate", *model, "--data", str(data / "train"), "--out", str(blocker / "sub")]
    c.add("--out that cannot be written", evaluate, 2, "a_file")
    c.add(
        "sort into a folder inside the input", ["sort", *model, str(loop), "--out", str(loop / "sorted")], 2, "sorted"
    )
    c.add("unknown --class for generate", ["generate", *model, "--class", "castle", "--out", str(tmp / "g")], 2)
    generate = ["generate", *model, "--all", "--n", "100000", "--out", str(tmp / "g")]
    c.add("generate --n 100000 (one batch of a million images)", generate, 2)
    deconv = ["visualize", "deconv", *model, "--data", str(data), "--top", "100000", "--out", str(tmp / "d")]
    c.add("visualize deconv --top 100000 (78 GB of projections)", deconv, 2)
    nproc = ["train", "--data", str(data), "--out", str(tmp / "r2"), "--nproc", "3"]
    c.add("--nproc with a batch that does not split", nproc, 2)


def execute(items: list[Case], tmp: Path) -> list[tuple[str, int, float, str, bool]]:
    """Run the cases three at a time: (kind, exit, peak MB, the line shown, whether the promise held) each."""
    for path in tmp.rglob("*"):  # nobody must reach its cases (but not the locked ones)
        if path.is_dir() and not path.is_symlink() and path.stat().st_mode & 0o777:
            path.chmod(0o777)
    (tmp / ".mpl").mkdir(mode=0o777)
    (tmp / ".mpl").chmod(0o777)
    env = {**os.environ, "MPLCONFIGDIR": str(tmp / ".mpl")}

    def one(item: Case) -> tuple[str, int, float, str, bool]:
        kind, command, expect, named, nobody = item
        code, peak, text, line = run(command, NOBODY if nobody else [], env)
        held = code == expect and "Traceback" not in text
        if named:  # the bad file is named on a line of its own
            held &= any(named in ln for ln in text.splitlines())
        print(f"{kind}: exit {code}, {peak:.0f} MB, {'ok' if held else 'BROKEN'}: {line}", flush=True)
        return kind, code, peak, line.replace(str(tmp), "…"), held

    with ThreadPoolExecutor(max_workers=3) as pool:
        rows = list(pool.map(one, items))
    if any(kind.startswith("hostile file names: sort") for kind, *_ in items):
        line, held = names_come_back(tmp)
        print(f"hostile file names, read back: {'ok' if held else 'BROKEN'}: {line}", flush=True)
        rows.append(("hostile file names: CSV, JSON and manifest read back", 0, 0.0, line, held))
    return rows


def table(rows: list[tuple[str, int, float, str, bool]], minutes: float) -> str:
    lines = [
        f"Measured {datetime.date.today().isoformat()} with `python benchmarks/bad_inputs.py` "
        f"({len(rows)} kinds, {minutes:.1f} min on {os.cpu_count()} CPUs, three cases at a time). "
        "Exit: 2 when nothing could be processed, 0 when good photos were processed too. Peak: the command's "
        "resident memory. Promise: the expected exit, no traceback, and one line naming the bad file.",
        "",
        "| bad input | exit | peak MB | promise | what the user sees |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {kind} | {code} | {peak:.0f} | {'held' if held else '**broken**'} | `{line.replace('|', '/')}` |"
        for kind, code, peak, line, held in rows
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint (default: the shipped model)")
    parser.add_argument("--only", metavar="TEXT", help="run only the cases whose kind contains TEXT (no table written)")
    args = parser.parse_args()
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="bad-inputs-"))
    tmp.chmod(0o777)  # the unreadable-folder cases run as nobody, and write their outputs here
    c = Cases(tmp, ["--model", args.model] if args.model else [])
    bomb = undecodable_files(c)
    unusual_files(c)
    loop = files_that_work(c)
    all_bad_files_together(c)
    data = data_set_cases(c)
    checkpoint_cases(c, args.model, bomb)
    option_cases(c, data, loop)
    for kind, command, expect, named in name_cases(tmp, c.model, photo):
        c.add(kind, command, expect, named)
    rows = execute([item for item in c.items if args.only is None or args.only in item[0]], tmp)
    text = table(rows, (time.monotonic() - started) / 60)
    if args.only is None:
        (HERE / "bad_inputs.md").write_text(text)
    print(text, end="")
    for path in tmp.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o777)
    shutil.rmtree(tmp, ignore_errors=True)
    if not all(held for *_, held in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()

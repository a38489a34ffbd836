"""Train every network this project ships or measures with, from one table: the ensemble members, the
distilled students, the judges of the class images and the recipe candidates.

    python benchmarks/train_pool.py --out runs/pool                           # everything, one at a time
    python benchmarks/train_pool.py --out runs/pool --only muon90 student3    # every shipped network
    python benchmarks/train_pool.py --out runs/pool --device cuda --parallel 14   # a GPU: many at once

Each job is one command line (`heritage train ...` or `benchmarks/judges.py train ...`), so each network
can be retrained alone by copying its line; a job starts when the jobs it needs have finished. Finished jobs
are skipped on a rerun, and `heritage train` resumes an interrupted run (`--resume` is passed), so a pool
longer than a working session is simply run again. Logs: OUT/NAME.log; OUT/pool.json: each job's command,
exit status and wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' own modules

from run import default_data

HERE = Path(__file__).resolve().parent
# Every job below was logged when AdamW for 56 epochs was the default recipe; `--recipe adamw` keeps it their
# starting point, so each line still reproduces its row now that the default is Muon (the flags after it win).
HERITAGE = [sys.executable, "-m", "heritage_cnn.cli", "train", "--recipe", "adamw"]
JUDGES = [sys.executable, str(HERE / "judges.py"), "train"]


@dataclass
class Job:
    name: str
    group: str  # member | student | judge | tuning-judge | quick
    args: list[str]
    needs: list[str] = field(default_factory=list)
    judge: bool = False  # benchmarks/judges.py instead of heritage train


# Shipped today (benchmarks/build_ensemble.py): `default` is the three `muon90` jobs near the end of the table,
# `fast` their student st3-muon-s8 (group `student3`). Shipped until 2026-11-27: the six `member` jobs below
# (l56-deep4, `--recipe adamw` with seed 0, and five variants of it) as `default`, and their student st-kd-mix as
# `fast`, whose teachers were l56-deep4 and three members that differ from it in augmentation, architecture and
# width, each that recipe's 56 epochs at batch 32.
ENSEMBLE = ("l56-deep4", "m-weakaug-s2", "m-vgg-s3", "m-wide-s4")  # the first student's teachers
MEMBERS = ("l56-deep4", "m-s1", "m-weakaug-s2", "m-vgg-s3", "m-wide-s4", "m-mix-s5")  # the previous default


def student(teachers: tuple[str, ...], *extra: str) -> list[str]:
    """The default network (298 MFLOP) distilled from `teachers` (pool jobs) for 150 epochs at batch 64."""
    teacher_args = [arg for name in teachers for arg in ("--teacher", f"{{out}}/{name}")]
    return ["--epochs", "150", "--batch-size", "64", *teacher_args, "--distill-weight", "0.9", *extra]


# MixUp/CutMix under the teachers' soft labels: what made the first shipped student (st-kd-mix) beat its teachers.
MIXED = ("--distill-temperature", "2", "--mixup", "0.2", "--cutmix", "1")

SGD = ["--optimizer", "sgd", "--lr", "0.05", "--weight-decay", "5e-4"]
FAST = [
    ("base", []),
    ("ls2", ["--label-smoothing", "0.2"]),
    ("ema", ["--ema", "0.999"]),
    ("lr5", ["--lr", "0.005"]),
    ("sgd", SGD),
    ("sgd-lr1", ["--optimizer", "sgd", "--lr", "0.1", "--weight-decay", "5e-4"]),
    ("ls2-ema-lr4", ["--label-smoothing", "0.2", "--ema", "0.999", "--lr", "0.004"]),
    ("sgd-ls2-ema", [*SGD, "--label-smoothing", "0.2", "--ema", "0.999"]),
]
FAST56 = [("ls2-ema", ["--label-smoothing", "0.2", "--ema", "0.999"])]
MUON = ["--optimizer", "muon"]
MUON90 = ("t90-muon", "c45-muon-cons12", "t90-muon-s1")  # the shipped default since 2026-11-27
MUON45 = [*MUON, "--epochs", "45"]

JOBS = [
    # The first shipped single network (`fast` until the distilled student replaced it): the default recipe, seed 0.
    Job("l56-deep4", "member", ["--seed", "0"]),
    Job("m-s1", "member", ["--seed", "1"]),  # the default recipe, another seed: what a recipe change adds
    Job("m-weakaug-s2", "member", ["--seed", "2", "--rotation", "10", "--zoom", "0.1", "--shift", "0.05"]),
    Job("m-vgg-s3", "member", ["--seed", "3", "--plain", "--blocks", "2,2,2,2"]),
    Job("m-wide-s4", "member", ["--seed", "4", "--widths", "32,64,128,256", "--blocks", "1,1,1,1"]),
    Job("m-mix-s5", "member", ["--seed", "5", "--mixup", "0.2", "--cutmix", "1"]),
    Job(
        "st-kd",
        "student-nomix",  # the same student without MixUp/CutMix (0.935-0.941 at epochs 137-146: not rerun)
        ["--seed", "7", *student(ENSEMBLE, "--distill-temperature", "2")],
        needs=list(ENSEMBLE),
    ),
    Job("st-kd-mix", "student", ["--seed", "8", *student(ENSEMBLE, *MIXED)], needs=list(ENSEMBLE)),
    # Students of all six networks of the shipped ensemble, at three shapes: with st-kd-mix, the candidate ensemble
    # of students (chosen before any was trained; not shipped: 0.1 pt over the members' ensemble, within noise).
    Job("st6-s9", "student-ensemble", ["--seed", "9", *student(MEMBERS, *MIXED)], needs=list(MEMBERS)),
    Job("st6-s10", "student-ensemble", ["--seed", "10", *student(MEMBERS, *MIXED)], needs=list(MEMBERS)),
    Job("st6-s16", "student-ensemble", ["--seed", "16", *student(MEMBERS, *MIXED)], needs=list(MEMBERS)),
    Job(
        "st6-wide-s14",
        "student-ensemble",
        ["--seed", "14", "--widths", "32,64,128,256", "--blocks", "1,1,1,1", *student(MEMBERS, *MIXED)],
        needs=list(MEMBERS),
    ),
    Job(
        "st6-vgg-s15",
        "student-ensemble",
        ["--seed", "15", "--plain", "--blocks", "2,2,2,2", *student(MEMBERS, *MIXED)],
        needs=list(MEMBERS),
    ),
    # Judges of the class images. Held out (never used while choosing synthesis settings): another architecture
    # and normalisation (torchvision ResNet-18; a VGG-style network with group norm and [-1, 1] inputs) and the
    # project's own network at another width. Tuning judges: the only ones the synthesis settings may be tuned on.
    Job("j-resnet18-s11", "judge", ["--arch", "resnet18", "--seed", "11"], judge=True),
    Job("j-vgggn-s12", "judge", ["--arch", "vgg-gn", "--seed", "12"], judge=True),
    Job("j-wide-s13", "judge", ["--seed", "13", "--widths", "32,64,128,256", "--blocks", "1,1,1,1", "--epochs", "40"]),
    Job("t-b1111-s21", "tuning-judge", ["--seed", "21", "--blocks", "1,1,1,1", "--epochs", "30"]),
    Job("t-vgggn-s22", "tuning-judge", ["--arch", "vgg-gn", "--seed", "22"], judge=True),
    # Candidates for the quick recipe of `heritage demo` (minutes on two CPU cores).
    Job("q-b1111-e16", "quick", ["--blocks", "1,1,1,1", "--epochs", "16"]),
    Job("q-deep4-e12", "quick", ["--epochs", "12"]),
    Job("q-b1111-e16-bs16", "quick", ["--blocks", "1,1,1,1", "--epochs", "16", "--batch-size", "16"]),
    Job(
        "q-b1111-e18-ls2",
        "quick",
        ["--blocks", "1,1,1,1", "--epochs", "18", "--label-smoothing", "0.2", "--lr", "0.004"],
    ),
    # Candidates for a default recipe in half the time (<= 14 min on two CPU cores: 26 epochs of the default
    # network, decode included; or >= 93.8 % in the default's 56 epochs), screened on a GPU.
    *(Job(f"h26-{name}", "fast-recipe", ["--seed", "30", "--epochs", "26", *extra]) for name, extra in FAST),
    *(Job(f"h56-{name}", "fast-recipe", ["--seed", "30", *extra]) for name, extra in FAST56),
    # Third GPU pool (2026-11-27). Muon in the default's time (45 Muon epochs cost 56 AdamW ones on two cores),
    # three seeds, against the default recipe with the same seeds (seed 1 is m-s1 above).
    *(Job(f"g45-muon-s{seed}", "muon-seeds", ["--seed", str(seed), *MUON45]) for seed in (1, 2, 3)),
    *(Job(f"g56-s{seed}", "muon-seeds", ["--seed", str(seed)]) for seed in (2, 3)),
    # Half the default's time with Muon at larger batches: Muon's per-step cost is spread over more photos (a
    # photo costs about what it costs AdamW at batch 32 on two cores, benchmarks/step_time.py), so 28 epochs fit.
    Job(
        "g28-muon-bs128",
        "half-time-batch",
        ["--seed", "0", *MUON, "--epochs", "28", "--batch-size", "128", "--lr", "0.006"],
    ),
    Job("g28-muon-bs128-lr3", "half-time-batch", ["--seed", "0", *MUON, "--epochs", "28", "--batch-size", "128"]),
    Job(
        "g25-muon-bs64",
        "half-time-batch",
        ["--seed", "0", *MUON, "--epochs", "25", "--batch-size", "64", "--lr", "0.004"],
    ),
    # Members that differ by input scale: the default recipe on photos enlarged 1.5x (96 px) and 1.25x (80 px).
    Job("m-x96-s40", "scale-member", ["--seed", "40", "--input-scale", "1.5"]),
    Job("m-x96-s41", "scale-member", ["--seed", "41", "--input-scale", "1.5"]),
    Job("m-x80-s42", "scale-member", ["--seed", "42", "--input-scale", "1.25"]),
    # Muon where its accuracy ends (2026-11-27, two CPU cores): twice the default's epochs, and view consistency
    # at batch 16 (two augmented views of each photo); the three averaged with flip views are the declared test
    # of benchmarks/recipes.md's "What is left to win".
    Job("t90-muon", "muon90", ["--seed", "0", *MUON, "--epochs", "90"]),
    Job("c45-muon-cons12", "muon90", ["--seed", "0", *MUON45, "--batch-size", "16", "--consistency", "12"]),
    Job("t90-muon-s1", "muon90", ["--seed", "1", *MUON, "--epochs", "90"]),
    # `fast` since 2026-11-28: the student of today's default (the three above), made as st-kd-mix was.
    Job("st3-muon-s8", "student3", ["--seed", "8", *student(MUON90, *MIXED)], needs=list(MUON90)),
    # The three networks of `default` trained again with outliers from the first step (docs/open_set.md, "`default`
    # with outliers from the first step"); `--outliers DIR` names the pool (benchmarks/outlier_exposure.py
    # --write-pool).
    Job("t90-muon-oe", "muon90-oe", ["--seed", "0", *MUON, "--epochs", "90", "--outliers", "{outliers}"]),
    Job(
        "c45-muon-cons12-oe",
        "muon90-oe",
        ["--seed", "0", *MUON45, "--batch-size", "16", "--consistency", "12", "--outliers", "{outliers}"],
    ),
    Job("t90-muon-s1-oe", "muon90-oe", ["--seed", "1", *MUON, "--epochs", "90", "--outliers", "{outliers}"]),
]


def command(job: Job, args: argparse.Namespace) -> list[str]:
    out = Path(args.out)
    extra = [a.replace("{out}", str(out)).replace("{outliers}", str(args.outliers)) for a in job.args]
    if job.judge:
        return [*JUDGES, *extra, "--data", args.data, "--out", str(out / job.name), "--device", args.device]
    runtime = ["--resume", "-q", "--device", args.device] + (["--threads", str(args.threads)] if args.threads else [])
    if args.cache_dir:
        runtime += ["--cache-dir", args.cache_dir]
    return [*HERITAGE, "--data", args.data, "--out", str(out / job.name), *extra, *runtime]


def finished(job: Job, out: Path) -> bool:
    if job.judge:
        return (out / f"{job.name}.safetensors").exists()
    meta = out / job.name / "last.json"
    if not meta.exists():
        return False
    info = json.loads(meta.read_text())
    return info.get("epochs_trained") == info.get("recipe", {}).get("epochs", -1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=default_data())
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="groups: member student student-ensemble student-nomix judge tuning-judge quick fast-recipe muon-seeds "
        "half-time-batch scale-member muon90 student3 muon90-oe",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--parallel", type=int, default=1, help="jobs at once (a GPU takes many small ones)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per job")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--deadline", type=float, default=None, help="seconds: stop every job then (resumable)")
    parser.add_argument("--outliers", default="runs/oe/pool", help="the outlier pool of the muon90-oe jobs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [j for j in JOBS if args.only is None or j.group in args.only]
    names = {j.name for j in jobs}
    started, running, record = time.monotonic(), {}, {}
    pending = [j for j in jobs if not finished(j, out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    while pending or running:
        elapsed = time.monotonic() - started
        if args.deadline and elapsed > args.deadline:
            for name, (proc, _, _) in running.items():
                proc.terminate()
                record[name] = {"status": "stopped at the deadline (resumable)", "seconds": round(elapsed, 1)}
            for proc, _, _ in running.values():
                proc.wait()
            break
        for name, (proc, t0, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                record[name]["status"] = proc.returncode
                record[name]["seconds"] = round(time.monotonic() - t0, 1)
                print(
                    f"[{elapsed:6.0f} s] {name}: exit {proc.returncode} after {record[name]['seconds']:.0f} s",
                    flush=True,
                )
                del running[name]
        done = {j.name for j in jobs if finished(j, out)}
        for job in list(pending):
            if len(running) >= args.parallel:
                break
            if any(n in names and n not in done for n in job.needs):
                if any(n in names and record.get(n, {}).get("status") not in (None, 0) for n in job.needs):
                    pending.remove(job)  # a job it needs failed
                    record[job.name] = {"status": "skipped: a job it needs failed"}
                continue
            pending.remove(job)
            cmd = command(job, args)
            log = open(out / f"{job.name}.log", "w")  # noqa: SIM115 - closed when the job ends
            running[job.name] = (
                subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env),
                time.monotonic(),
                log,
            )
            record[job.name] = {"group": job.group, "command": " ".join(cmd), "status": None}
            print(f"[{elapsed:6.0f} s] start {job.name}", flush=True)
        tmp = out / "pool.json.tmp"
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(out / "pool.json")
        time.sleep(2)
    failed = [n for n, r in record.items() if r.get("status") not in (0, None)]
    print(f"pool: {len(record) - len(failed)} of {len(record)} jobs finished; failed or stopped: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

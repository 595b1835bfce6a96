"""The default job's fixed costs: wall time of ``sparseopt train`` minus its training loop,
against the wall time of ``python -c "import torch"``.

Every round runs, in a rotating order, ``import torch`` alone and the default job (the
command ``make demo`` runs) with each variant of its outputs: as it is, with the PNG plots,
without TensorBoard, with a checkpoint after every epoch. Each job is a fresh process; its training loop is the
``wall_time`` of its ``summary.json`` (epochs with their evaluations, without the files
and plots). Reported per variant: median, 10th and 90th percentile of

    fixed = job wall time - training loop - median wall time of "import torch",

the issue's target being ``fixed <= 1.0 s`` for the default job.

    python benchmarks/job_overhead.py --rounds 7 --out runs/job_overhead
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import spread, where, write

#: The console script beside this interpreter (what ``make demo`` runs).
SPARSEOPT = str(Path(sys.executable).with_name("sparseopt"))
#: Variant name -> extra flags of ``sparseopt train``.
VARIANTS: dict[str, list[str]] = {
    "default job": [],
    "--plots": ["--plots"],
    "--no-tensorboard": ["--no-tensorboard"],
    "--checkpoint-seconds 0": ["--checkpoint-seconds", "0"],
}


def _wall(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def measure(rounds: int) -> dict[str, list[float]]:
    """Per job, the wall times (``import torch``) or fixed costs before the subtraction of
    ``import torch`` (the variants: wall minus training loop), over ``rounds`` rounds."""
    py = sys.executable
    jobs: list[tuple[str, list[str]]] = [("import torch", [py, "-c", "import torch"])]
    jobs += [(name, flags) for name, flags in VARIANTS.items()]
    out: dict[str, list[float]] = {name: [] for name, _ in jobs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for k in range(len(jobs)):
                name, argv = jobs[(k + r) % len(jobs)]
                if name == "import torch":
                    out[name].append(_wall(argv))
                    continue
                run = Path(tmp) / f"{len(out[name])}-{k}"
                cmd = [SPARSEOPT, "train", "--quiet", "--out", str(run), *argv]
                wall = _wall(cmd)
                loop = json.loads((run / "summary.json").read_text())["wall_time"]
                out[name].append(wall - loop)
    return out


def report(times: dict[str, list[float]]) -> tuple[str, dict[str, object]]:
    torch_wall = statistics.median(times["import torch"])
    lines = [
        f'`python -c "import torch"`: median {torch_wall:.2f} s.',
        "",
        "| job | fixed cost over `import torch` (s), median | p10 | p90 | target ≤ 1.0 s |",
        "|---|---:|---:|---:|---|",
    ]
    result: dict[str, object] = {"import_torch": spread(times["import torch"])}
    for name in VARIANTS:
        s = spread([t - torch_wall for t in times[name]])
        result[name] = s
        met = "met" if s["median"] <= 1.0 else "not met"
        lines.append(
            f"| `sparseopt train {name}` | {s['median']:.2f} | {s['p10']:.2f} | "
            f"{s['p90']:.2f} | {met if name == 'default job' else ''} |"
        )
    info = where("cpu")
    lines += ["", f"{info['machine']} · {info['date']} · {len(times['import torch'])} rounds"]
    result.update(info)
    return "\n".join(lines), result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out", help="write OUT.md and OUT.json")
    args = p.parse_args(argv)
    text, result = report(measure(args.rounds))
    print(text)
    if args.out:
        write(args.out, text, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

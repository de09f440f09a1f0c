"""Execute the numbered notebooks in order with papermill.

``python -m dapo.run_notebooks`` runs every ``notebooks/NN_*.ipynb`` for the synthetic profile
and writes the executed copies to ``results/<profile>/notebooks/``; ``--smoke`` runs them at
smoke size into ``results/smoke`` (what ``make test`` does); ``--only 03`` selects notebooks.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dapo.paths import REPO_ROOT, results_dir


def notebook_paths(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks, in order, optionally only those whose number is in ``only``."""
    paths = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if only:
        paths = [p for p in paths if p.name[:2] in only]
    if not paths:
        raise SystemExit(f"no notebooks found in {REPO_ROOT / 'notebooks'} (selection: {only})")
    return paths


def run(profile: str = "synthetic", smoke: bool = False, only: list[str] | None = None,
        parameters: dict | None = None) -> list[Path]:
    """Execute the notebooks; returns the executed copies' paths. Stops at the first failure."""
    import papermill as pm

    params = {"profile": profile, "smoke": smoke, **(parameters or {})}
    out_dir = results_dir(profile, smoke) / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    done, seconds = [], {}
    total = time.perf_counter()
    for path in notebook_paths(only):
        start = time.perf_counter()
        print(f"[dapo] executing {path.name} with {params}", flush=True)
        out = out_dir / path.name
        pm.execute_notebook(str(path), str(out), parameters=params, cwd=str(REPO_ROOT),
                            kernel_name="python3", progress_bar=False)
        seconds[path.stem] = time.perf_counter() - start
        print(f"[dapo] {path.name} done in {seconds[path.stem]:.0f} s -> {out}", flush=True)
        done.append(out)
    print("[dapo] time per notebook: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in seconds.items())
          + f"; total {(time.perf_counter() - total) / 60:.1f} min", flush=True)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="synthetic", choices=["synthetic", "paper"])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for tests")
    parser.add_argument("--only", nargs="*", help="notebook numbers to run, e.g. --only 00 03")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="extra papermill parameter (value parsed as YAML), e.g. -p epochs 1")
    args = parser.parse_args(argv)
    import yaml

    extra = {name: yaml.safe_load(value) for name, value in args.parameter}
    run(args.profile, args.smoke, args.only, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())

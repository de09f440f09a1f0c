"""Execute the numbered notebooks in order with papermill.

``python -m dapo.run_notebooks`` runs every ``notebooks/NN_*.ipynb`` for the synthetic profile
and writes the executed copies to ``results/<profile>/notebooks/``; ``--smoke`` runs them at
smoke size into ``results/smoke``; ``--only 03`` selects notebooks. ``--references tests/notebooks``
(``make nbval-refs``) also stores the executed copies as nbval's references, which ``make test``
re-executes and compares (images and timing metadata dropped: nbval compares text only).
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


def write_reference(executed: str | Path, dest_dir: str | Path) -> Path:
    """Store an executed notebook as nbval's reference: outputs kept as text (images dropped,
    nbval never compares them) and papermill's per-run timings removed, so that regenerating the
    references changes the files only where an output changed."""
    import nbformat

    nb = nbformat.read(str(executed), as_version=4)
    nb.metadata.get("papermill", {}).update(start_time=None, end_time=None, duration=None,
                                            input_path=None, output_path=None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if "papermill" in cell.metadata:
            cell.metadata.papermill = {key: value for key, value in cell.metadata.papermill.items()
                                       if key not in ("start_time", "end_time", "duration", "status")}
        for output in cell.get("outputs", []):
            data = output.get("data")
            if data:
                for key in [k for k in data if k.startswith("image/")]:
                    del data[key]
                if not data:
                    data["text/plain"] = ""
    dest = Path(dest_dir) / Path(executed).name
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(dest))
    return dest


def run(profile: str = "synthetic", smoke: bool = False, only: list[str] | None = None,
        parameters: dict | None = None, references: str | Path | None = None) -> list[Path]:
    """Execute the notebooks; returns the executed copies' paths. Stops at the first failure.
    ``references``: a folder that also receives each executed copy as an nbval reference."""
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
        if references:
            print(f"[dapo] nbval reference -> {write_reference(out, references)}", flush=True)
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
    parser.add_argument("--references", metavar="DIR",
                        help="also store the executed notebooks in DIR as nbval references (make nbval-refs)")
    args = parser.parse_args(argv)
    import yaml

    extra = {name: yaml.safe_load(value) for name, value in args.parameter}
    run(args.profile, args.smoke, args.only, extra, args.references)
    return 0


if __name__ == "__main__":
    sys.exit(main())

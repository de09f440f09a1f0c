"""Execute the numbered notebooks with papermill, resuming where an earlier run stopped.

``python -m dapo.experiments.run_notebooks`` runs every ``notebooks/NN_*.ipynb`` for the synthetic profile
and writes the executed copies to ``results/<profile>/notebooks/``; ``--smoke`` runs them at
smoke size into ``results/smoke``; ``--only 03`` selects notebooks. ``--references tests/notebooks``
(``make nbval-refs``) also stores the executed copies as nbval's references, which ``make test``
re-executes and compares (images and timing metadata dropped: nbval compares text only).

Resuming (issue 32, item 5): ``manifest.json`` beside the executed copies records per notebook
what it was run with (a hash of the notebook, a content hash of the ``dapo`` package, the
papermill parameters, the numerics environment), whether it completed, its wall time and the
run id. A re-run skips a notebook whose executed copy exists, that completed and whose recorded
inputs are unchanged; a notebook that failed, was interrupted or whose inputs changed runs
again. Only the changed notebooks rerun, not the ones after them: a notebook reads no other
notebook's outputs (shared checkpoints are keyed by what determines them). ``--force`` reruns
every selected notebook. Each invocation has one run id (UTC time + commit), given to the
kernels as ``DAPO_RUN_ID`` so the tables can be stamped with it. ``-j 2`` runs two notebooks at
once, each with one thread (``OMP_NUM_THREADS=1``, ``MKL_NUM_THREADS=1``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path

from dapo.util.atomic import write_text
from dapo.util.paths import REPO_ROOT, results_dir

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# Environment variables that change the numbers a notebook computes (Makefile's SAME_NUMERICS,
# dapo/util/precision.py's DAPO_AUTO_PRECISION, the data root): a change reruns the notebook.
NUMERICS_ENV = ("DAPO_AUTO_PRECISION", "DAPO_DATA", "ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA",
                "NPY_DISABLE_CPU_FEATURES", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def notebook_paths(only: list[str] | None = None, folder: str | Path | None = None) -> list[Path]:
    """The numbered notebooks, in order, optionally only those whose number is in ``only``."""
    folder = Path(folder) if folder else REPO_ROOT / "notebooks"
    paths = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        paths = [p for p in paths if p.name[:2] in only]
    if not paths:
        raise SystemExit(f"no notebooks found in {folder} (selection: {only})")
    return paths


def file_hash(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def package_hash(root: str | Path = PACKAGE_DIR) -> str:
    """Content hash of the package: every file under ``root`` (sources, reference CSVs, assets)
    by relative path and bytes, caches (``__pycache__``, ``*.pyc``) and hidden files left out.
    Modification times play no part, so a fresh clone hashes like the tree it came from."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if "__pycache__" in relative.parts or path.suffix == ".pyc" \
                or any(part.startswith(".") for part in relative.parts):
            continue
        digest.update(relative.as_posix().encode() + b"\0" + file_hash(path).encode() + b"\n")
    return digest.hexdigest()


def new_run_id() -> str:
    """``<UTC time>-<short commit>``, e.g. ``20261207T045012Z-b3d9ed5``."""
    from dapo.experiments.reporting import git_commit

    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + git_commit(REPO_ROOT)


def read_manifest(path: Path) -> dict:
    """The manifest's entries by notebook stem; an unreadable manifest counts as empty (every
    notebook then reruns) and says so."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        print(f"[dapo] {path} is not valid JSON: ignored, every notebook reruns", flush=True)
        return {}


def write_manifest(path: Path, entries: dict) -> None:
    write_text(path, json.dumps(entries, indent=2, sort_keys=True) + "\n")


def inputs_of(notebook: Path, package: str, params: dict, env: dict) -> dict:
    """What determines an executed notebook, as recorded in the manifest."""
    return {"notebook_sha256": file_hash(notebook), "package_sha256": package,
            "parameters": params, "environment": {k: env[k] for k in NUMERICS_ENV if k in env}}


def rerun_reason(entry: dict | None, inputs: dict, executed: Path) -> str | None:
    """Why a notebook must run again, or None when its recorded run can be kept."""
    if not entry:
        return "not run before"
    if not entry.get("completed"):
        return f"did not complete in run {entry.get('run_id')}"
    if not executed.is_file():
        return f"executed copy {executed.name} missing"
    changed = [name for name, key in (("notebook", "notebook_sha256"), ("dapo package", "package_sha256"),
                                      ("parameters", "parameters"), ("environment", "environment"))
               if entry.get(key) != inputs[key]]
    return f"{', '.join(changed)} changed since run {entry.get('run_id')}" if changed else None


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


def execute(notebook: str, out: str, params: dict, env: dict) -> float:
    """Execute one notebook with papermill (in this process or a pool worker); its seconds."""
    import papermill as pm

    os.environ.update(env)  # inherited by the kernel papermill starts
    start = time.perf_counter()
    pm.execute_notebook(notebook, out, parameters=params, cwd=str(REPO_ROOT),
                        kernel_name="python3", progress_bar=False)
    seconds = time.perf_counter() - start
    relative_paths(out)
    return seconds


def previous_seconds(executed: Path) -> float | None:
    """How long the executed copy at ``executed`` took, as papermill recorded it (``None`` without one)."""
    try:
        duration = json.loads(executed.read_text(encoding="utf-8"))["metadata"]["papermill"]["duration"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(duration) if isinstance(duration, (int, float)) else None


def longest_first(pending: list, out_dir: Path) -> list:
    """``pending`` (``(path, ...)`` tuples) ordered for several notebooks at once: the longest first,
    by the duration of each one's previous executed copy (the committed notebooks carry theirs), so
    the two longest (04, 13) do not start last and leave one core idle; ties and notebooks without
    a copy keep their numbered order, after the timed ones. The results do not depend on the order
    (each notebook reads only checkpoints keyed by what determines them: tests/test_order_independence.py)."""
    timed = [(previous_seconds(out_dir / item[0].name), index, item) for index, item in enumerate(pending)]
    return [item for _, _, item in sorted(timed, key=lambda t: (t[0] is None, -(t[0] or 0.0), t[1]))]


def relative_paths(executed: str | Path) -> None:
    """Papermill records the input and output notebooks' absolute paths in the metadata: shown
    relative to the repository instead (no machine paths in a committed notebook)."""
    import nbformat

    from dapo.util.paths import shown_path

    nb = nbformat.read(str(executed), as_version=4)
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if meta.get(key):
            meta[key] = shown_path(meta[key])
    nbformat.write(nb, str(executed))


def run(profile: str = "synthetic", smoke: bool = False, only: list[str] | None = None,
        parameters: dict | None = None, references: str | Path | None = None, force: bool = False,
        jobs: int = 1, notebooks: list[Path] | None = None, out_dir: str | Path | None = None) -> list[Path]:
    """Execute the notebooks that need it and return every selected notebook's executed copy.
    Stops starting notebooks at the first failure and raises it once the running ones finished.
    ``references``: a folder that also receives each executed copy as an nbval reference;
    ``jobs``: notebooks at once (each with one thread when more than one); ``notebooks`` and
    ``out_dir`` replace ``notebooks/NN_*.ipynb`` and ``results/<profile>/notebooks`` (tests)."""
    params = {"profile": profile, "smoke": smoke, **(parameters or {})}
    out_dir = Path(out_dir) if out_dir else results_dir(profile, smoke) / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "manifest.json"
    manifest = read_manifest(manifest_path)
    run_id = os.environ["DAPO_RUN_ID"] = new_run_id()
    env = {"DAPO_RUN_ID": run_id, **(ONE_THREAD if jobs > 1 else {})}
    package = package_hash()
    paths = notebooks if notebooks is not None else notebook_paths(only)
    print(f"[dapo] run {run_id}: {len(paths)} notebooks, parameters {params}"
          + (f", {jobs} at once with one thread each" if jobs > 1 else ""), flush=True)

    pending, seconds, skipped = [], {}, {}
    for path in paths:
        inputs = inputs_of(path, package, params, {**os.environ, **env})
        reason = "--force" if force else rerun_reason(manifest.get(path.stem), inputs, out_dir / path.name)
        if reason is None:
            entry = manifest[path.stem]
            print(f"[dapo] {path.stem}: unchanged since run {entry['run_id']}, skipped (pass --force to rerun)",
                  flush=True)
            seconds[path.stem], skipped[path.stem] = entry.get("seconds", 0.0), entry["run_id"]
            if references:
                write_reference(out_dir / path.name, references)
        else:
            pending.append((path, inputs, reason))

    if jobs > 1 and len(pending) > 1:
        pending = longest_first(pending, out_dir)
        print(f"[dapo] order (longest previous run first): {', '.join(p.stem[:2] for p, *_ in pending)}", flush=True)
    failure = None
    pool = ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) if jobs > 1 else _InThisProcess()
    with pool:
        running = {}
        while pending or running:
            while pending and len(running) < jobs and failure is None:
                path, inputs, reason = pending.pop(0)
                manifest[path.stem] = {**inputs, "completed": False, "run_id": run_id, "seconds": None,
                                       "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                write_manifest(manifest_path, manifest)
                print(f"[dapo] executing {path.name} ({reason})", flush=True)
                future = pool.submit(execute, str(path), str(out_dir / path.name), params, env)
                running[future] = path
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in sorted(finished, key=lambda f: running[f].name):
                path = running.pop(future)
                try:
                    seconds[path.stem] = future.result()
                except Exception as error:  # papermill names the failing cell; the manifest says "not completed"
                    print(f"[dapo] {path.name} FAILED: {type(error).__name__}: {str(error)[:500]}", flush=True)
                    failure = failure or error
                    continue
                manifest[path.stem].update(completed=True, seconds=round(seconds[path.stem], 1))
                write_manifest(manifest_path, manifest)
                print(f"[dapo] {path.name} done in {seconds[path.stem]:.0f} s -> {out_dir / path.name}", flush=True)
                if references:
                    print(f"[dapo] nbval reference -> {write_reference(out_dir / path.name, references)}",
                          flush=True)
    print_times(paths, seconds, skipped, run_id)
    if failure is not None:
        raise failure
    return [out_dir / p.name for p in paths]


class _InThisProcess:
    """The executor of ``-j 1``: runs each notebook in this process when submitted."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, *args) -> Future:
        future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as error:
            future.set_exception(error)
        return future


def print_times(paths: list[Path], seconds: dict, skipped: dict, run_id: str) -> None:
    """Per-notebook wall time (a skipped notebook's as recorded in its run) and the total."""
    print(f"[dapo] wall time per notebook (run {run_id}):", flush=True)
    for path in paths:
        if path.stem not in seconds:
            print(f"[dapo]   {path.stem:<28} not completed", flush=True)
            continue
        note = f"  (skipped; recorded in run {skipped[path.stem]})" if path.stem in skipped else ""
        print(f"[dapo]   {path.stem:<28} {seconds[path.stem] / 60:6.1f} min{note}", flush=True)
    ran = sum(v for k, v in seconds.items() if k not in skipped)
    print(f"[dapo] total {sum(seconds.values()) / 60:.1f} min of notebook time ({ran / 60:.1f} min executed in "
          f"this run, {len(skipped)} skipped)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="synthetic", choices=["synthetic", "paper"])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for tests")
    parser.add_argument("--only", nargs="*", help="notebook numbers to run, e.g. --only 00 03")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="extra papermill parameter (value parsed as YAML), e.g. -p epochs 1")
    parser.add_argument("--references", metavar="DIR",
                        help="also store the executed notebooks in DIR as nbval references (make nbval-refs)")
    parser.add_argument("--force", action="store_true", help="rerun notebooks whose recorded run is unchanged")
    parser.add_argument("-j", "--jobs", type=int, default=1,
                        help="notebooks executed at once, each with one thread when more than one (default 1)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"-j/--jobs must be at least 1, got {args.jobs}")
    import yaml

    extra = {name: yaml.safe_load(value) for name, value in args.parameter}
    run(args.profile, args.smoke, args.only, extra, args.references, args.force, args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m dapo.crosscheck RELEASE --release PATH [--preset NAME]``: print the difference table,
exit 1 when a quantity is past its tolerance (2 when the release cannot be run)."""

from __future__ import annotations

import argparse
import sys

from dapo.crosscheck.compare import failures, fidelity_row, format_table, summary
from dapo.crosscheck.driver import ReleaseError

CHECKS = {"dapo": ("dapo_official", "dapo.crosscheck.dapo_check"),
          "multiads": ("multiads", "dapo.crosscheck.multiads_check"),
          "anomalyclip": ("anomalyclip", "dapo.crosscheck.anomalyclip_check"),
          "adaclip": ("adaclip", "dapo.crosscheck.adaclip_check")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dapo.crosscheck", description=__doc__)
    parser.add_argument("release", choices=sorted(CHECKS), help="which authors' release to check against")
    parser.add_argument("--release", dest="path", required=True, help="folder of a local checkout of that release")
    parser.add_argument("--preset", default=None, help="our preset to check (default: the one claiming the release)")
    parser.add_argument("--steps", type=int, default=5, help="identical Adam steps before comparing the weights")
    args = parser.parse_args(argv)
    default_preset, module_name = CHECKS[args.release]
    import importlib

    module = importlib.import_module(module_name)
    try:
        result = module.run(args.path, args.preset or default_preset, steps=args.steps)
    except ReleaseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"release {result.release} at commit {result.commit}; our preset {result.preset}; {result.day}")
    for key, value in result.facts.items():
        if key.startswith(("fact/", "meta/defect")):
            print(f"  {key}: {value}")
    print(format_table(result.rows))
    print("\nlargest difference per quantity:")
    for key, max_abs, max_rel in summary(result.rows):
        print(f"  {key}: abs {max_abs if max_abs is None else f'{max_abs:.1e}'}, "
              f"rel {max_rel if max_rel is None else f'{max_rel:.1e}'}")
    print("\ndocs/FIDELITY.md row:\n" + fidelity_row(result.preset, result.commit, result.day, result.rows))
    bad = failures(result.rows)
    known = getattr(module, "KNOWN_DIFFERENCES", {})
    if bad and known:
        print("\nknown differences (docs/FIDELITY.md):")
        for prefix, reason in known.items():
            print(f"  {prefix}*: {reason}")
        unexplained = [row.name for row in bad if not any(row.name.startswith(p) for p in known)]
        print(f"unexplained: {unexplained or 'none'}")
    print(f"\n{len(bad)} of {len(result.rows)} quantities past tolerance" if bad else
          f"\nall {len(result.rows)} quantities within tolerance")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

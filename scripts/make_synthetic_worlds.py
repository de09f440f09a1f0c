"""Generate the synthetic worlds in their dataset layouts (see dapo/synthetic/worlds.py).

    python scripts/make_synthetic_worlds.py                 # default size under data/synthetic/default
    python scripts/make_synthetic_worlds.py --smoke         # a few images per class
    python scripts/make_synthetic_worlds.py --root /tmp/w --worlds synthetic_target
"""

from __future__ import annotations

import argparse
import time

from dapo.synthetic.worlds import WORLDS, ensure_worlds, world_root, write_world
from dapo.util.paths import data_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help="data root (default: $DAPO_DATA or data/)")
    parser.add_argument("--worlds", nargs="+", default=list(WORLDS), choices=list(WORLDS))
    parser.add_argument("--smoke", action="store_true", help="smoke size (a few images per class)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="regenerate even if the same world is on disk")
    args = parser.parse_args()
    root = args.root or data_dir()
    roots = {name: world_root(root, name, args.smoke) for name in args.worlds}
    began = time.time()
    if args.force:
        for name, path in roots.items():
            write_world(name, path, smoke=args.smoke, seed=args.seed)
    else:
        ensure_worlds(roots, smoke=args.smoke, seed=args.seed)
    for name, path in roots.items():
        print(f"{name}: {path}")
    print(f"done in {time.time() - began:.1f} s")


if __name__ == "__main__":
    main()

"""``python -m dapo``: the ``dapo`` command line (:mod:`dapo.cli`)."""

from dapo.cli import console

if __name__ == "__main__":
    console()

"""``python -m fastdec``: the command line of :mod:`fastdec.cli`."""

from fastdec.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

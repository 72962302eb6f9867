"""matplotlib for the benchmark scripts: headless, optional (plots are skipped without it)."""

from __future__ import annotations

from typing import Any


def pyplot() -> Any | None:
    """`matplotlib.pyplot` on the Agg backend, or None (with a hint) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed; skipping the plot (pip install 'fastdec[bench]')")
        return None
    return plt


def save(fig: Any, path: Any) -> None:
    """Lays out ``fig``, writes it as a PNG at ``path`` and says so."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")

"""Writing a matplotlib figure: the one place every plot (compare's curves and ladder, a reproduction's
fits) is laid out, saved and closed, so that no figure stays open in a long process."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_figure(figure: Any, path: Path, dpi: int = 120) -> Path:
    """Lay out, write as PNG (creating the folder) and close ``figure``; returns ``path``."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path

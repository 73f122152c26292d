"""The studies' generated pages in ``docs/``: the generated text, then the hand-written reading
of the numbers kept beside it (``<page>_discussion.md``), written atomically."""

from __future__ import annotations

from pathlib import Path

from sampo_engine.utils.atomic import write_text_atomic


def write_page(docs: str | Path, page: str, lines: list[str]) -> Path:
    """Write ``docs/<page>`` from ``lines`` (joined by newlines), with
    ``docs/<page stem>_discussion.md`` appended when it exists; returns the page's path."""
    docs = Path(docs)
    text = list(lines)
    discussion = docs / Path(page).name.replace(".md", "_discussion.md")
    if discussion.exists():
        text += [discussion.read_text(encoding="utf-8").rstrip(), ""]
    dst = docs / page
    write_text_atomic(dst, "\n".join(text))
    print(f"wrote {dst}")
    return dst


def save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure as PNG (110 dpi) atomically to ``path`` and close it."""
    import matplotlib.pyplot as plt

    from sampo_engine.utils.atomic import atomic_path

    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path

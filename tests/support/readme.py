"""Reading README.md in tests: a ``## `` section by its title and the code blocks in it."""

from __future__ import annotations

import re
from typing import List

__all__ = ["section", "blocks"]


def section(text: str, title: str) -> str:
    """The ``## title…`` section of a markdown ``text`` up to the next ``## `` heading (``###`` stays inside);
    ``ValueError`` when there is none."""
    start = 0 if text.startswith("## " + title) else text.index("\n## " + title) + 1
    end = text.find("\n## ", start + 3)
    return text[start:] if end < 0 else text[start:end]


def blocks(text: str, lang: str = "python") -> List[str]:
    """The fenced code blocks of ``lang`` in ``text``, in order."""
    return re.findall(r"```" + lang + r"\n(.*?)```", text, re.S)

"""A markdown table that is printed line by line as it is measured and saved at the end."""

from __future__ import annotations

from pathlib import Path


class MarkdownTable:
    def __init__(self, header: str, columns: list[str]):
        self.lines: list[str] = []
        for line in (header, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)):
            self.emit(line)

    def emit(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(self.lines) + "\n")

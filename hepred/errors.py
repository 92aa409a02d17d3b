"""User-facing errors: one line that names the case, the file and what is wrong."""
from __future__ import annotations

from pathlib import Path


class HepredError(Exception):
    """Bad user input or an input the pipeline cannot process safely.

    Rendered as a single line, so that a log of many cases stays readable and a user can
    see at once which case and which file to fix.
    """

    def __init__(self, message: str, case_id: str | None = None, path: str | Path | None = None):
        super().__init__(message)
        self.message = message
        self.case_id = case_id
        self.path = str(path) if path is not None else None

    def __str__(self) -> str:
        parts = []
        if self.case_id is not None:
            parts.append(f"case {self.case_id}")
        if self.path is not None:
            parts.append(self.path)
        parts.append(self.message)
        return ": ".join(parts)

    def with_context(self, case_id: str | None = None, path: str | Path | None = None) -> "HepredError":
        """Fill in the case or file where a lower layer did not know them."""
        return HepredError(
            self.message,
            case_id=self.case_id if self.case_id is not None else case_id,
            path=self.path if self.path is not None else path,
        )

    def naming_user_files(self, user_files: dict | None) -> "HepredError":
        """The same error naming the user's own file where it named a copy the workflow made
        (``user_files`` maps such copies to the files they came from)."""
        originals = {str(Path(copy)): str(user) for copy, user in (user_files or {}).items()}
        if self.path not in originals:
            return self
        return HepredError(self.message, case_id=self.case_id, path=originals[self.path])

"""Reading the TOML files users write (targets, device pools): one-line errors."""
from __future__ import annotations

from pathlib import Path


def read_toml(path, what: str) -> dict:
    """The table of a TOML file; ValueError naming `what` ("target file", "pool file")
    when it cannot be read or parsed."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    p = Path(path)
    try:
        return tomllib.loads(p.read_text())
    except OSError as e:
        raise ValueError(f"cannot read {what} {p}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{what} {p} is not valid TOML: {e}") from None

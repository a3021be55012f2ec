"""Tests of geochange.io.atomic: outputs appear whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from geochange.errors import InputError, OutputExistsError
from geochange.io.atomic import atomic_path, check_writable, write_text


def test_check_writable(tmp_path: Path) -> None:
    a, b = tmp_path / "a.gpkg", tmp_path / "b.tif"
    check_writable([a, b], overwrite=False)
    b.write_bytes(b"x")
    with pytest.raises(OutputExistsError, match=r"'.*b.tif' already exists; pass --overwrite"):
        check_writable([a, b], overwrite=False)
    check_writable([a, b], overwrite=True)
    with pytest.raises(InputError, match=r"folder '.*nope' does not exist; create it"):
        check_writable([tmp_path / "nope" / "x.tif"], overwrite=True)
    with pytest.raises(InputError, match="found a directory"):
        check_writable([tmp_path], overwrite=True)
    # Callers that know only the builtins catch it as FileExistsError.
    with pytest.raises(FileExistsError, match="already exists"):
        check_writable([b], overwrite=False)


def test_atomic_path(tmp_path: Path) -> None:
    final = tmp_path / "out.txt"
    with atomic_path(final) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".txt" and tmp != final
        tmp.write_text("ok")
        assert not final.exists()
    assert final.read_text() == "ok"
    with pytest.raises(KeyError), atomic_path(final) as tmp:
        tmp.write_text("half")
        raise KeyError("stop")
    assert final.read_text() == "ok"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_write_text_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    final = tmp_path / "report.md"
    assert write_text(final, "one\n") == final
    write_text(final, "two\n")
    assert final.read_text() == "two\n"
    with pytest.raises(TypeError):
        write_text(final, None)  # type: ignore[arg-type]
    assert final.read_text() == "two\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]

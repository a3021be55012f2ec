"""The progress bar: shown on a terminal, silent with -q and when stderr is a file or pipe."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import numpy as np
from helpers import run_cli, write_stack

DATES = ["2022-03-01", "2022-05-17", "2022-08-02"]


def _stack(tmp_path):
    data = np.random.default_rng(0).integers(500, 3000, (3, 2, 48, 48)).astype("uint16")
    return write_stack(tmp_path / "s", data, DATES)[0].parent


def _on_terminal(*args) -> str:
    """Run `geochange ARGS` with stderr on a pseudo-terminal; what it drew there."""
    leader, follower = pty.openpty()
    # A terminal of 100 columns (a new pseudo-terminal has 0, where tqdm draws nothing).
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    code = "import sys; from geochange.cli import main; main(sys.argv[1:])"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env={**os.environ, "TQDM_MININTERVAL": "0"},
    )
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=120)
    os.close(leader)
    assert proc.returncode == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


def test_bar_on_a_terminal_only(tmp_path):
    stack = _stack(tmp_path)
    args = ["detect", stack, "--method", "cva", "--no-quicklook", "--chunk-size", "16"]
    drawn = _on_terminal(*args, "-o", tmp_path / "a.gpkg")
    assert "chunk" in drawn and "\r" in drawn  # tqdm's bar over the 9 chunks
    assert "chunk" not in _on_terminal("-q", *args, "-o", tmp_path / "b.gpkg")
    code, _, err = run_cli(*args, "-o", tmp_path / "c.gpkg")  # stderr is not a terminal
    assert code == 0 and "chunk" not in err and "\r" not in err

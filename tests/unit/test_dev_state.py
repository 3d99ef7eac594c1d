"""State directories of `trustcard dev`: one per port, locked while a stack runs, found by
commands run beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustcard.local.state import (
    AmbiguousDevStacks,
    DevState,
    StateDirInUse,
    find_stacks,
    is_running,
    stack_for_commands,
)


def _stack(base: Path, port: int) -> DevState:
    state = DevState.for_port(base, port)
    state.acquire()
    state.write_info({"port": port, "database_url": f"sqlite:///{state.path}/trustcard.db"})
    return state


def test_a_running_state_directory_cannot_be_taken_twice(tmp_path: Path) -> None:
    first = _stack(tmp_path, 8000)
    try:
        assert is_running(first.path)
        # flock is per open file: a second open in this process contends like another process.
        with pytest.raises(StateDirInUse, match=r"8000 is in use by another `trustcard dev`"):
            DevState.for_port(tmp_path, 8000).acquire(wait=0.1)
        other = DevState.for_port(tmp_path, 8010)
        other.acquire()  # another port: its own directory
        other.release()
    finally:
        first.release()
    assert not is_running(first.path)
    again = DevState.for_port(tmp_path, 8000)
    again.acquire()
    again.release()


def test_commands_pick_the_running_stack_else_the_only_one(tmp_path: Path) -> None:
    assert stack_for_commands(tmp_path) is None
    stopped = _stack(tmp_path, 8000)
    stopped.release()
    only = stack_for_commands(tmp_path)
    assert only is not None
    assert (only.port, only.running) == (8000, False)

    running = _stack(tmp_path, 8010)
    try:
        chosen = stack_for_commands(tmp_path)
        assert chosen is not None
        assert (chosen.port, chosen.running) == (8010, True)
        assert chosen.database_url == f"sqlite:///{running.path}/trustcard.db"
    finally:
        running.release()
    # Two stopped stacks: no guessing.
    with pytest.raises(AmbiguousDevStacks, match=r"ports 8000, 8010\); set DATABASE_URL"):
        stack_for_commands(tmp_path)


def test_half_written_info_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "8000").mkdir()
    (tmp_path / "8000" / "dev.json").write_text('{"port": 80')
    assert find_stacks(tmp_path) == []

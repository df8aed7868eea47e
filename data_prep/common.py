"""Shared pieces of the data_prep commands: one-line user errors, parsing, hub downloads."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path


class UserError(Exception):
    """A problem the user can fix (a missing file, a bad flag): printed as one line, exit 2."""


def cli(main: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
    """Wrap a command's main: UserError -> `error: ...` on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            return int(main(argv) or 0)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(
                "interrupted; re-run the same command to continue where it stopped", file=sys.stderr
            )
            return 130

    return wrapper


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=f"python -m data_prep.{prog}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def snapshot(repo_id: str, local_dir: str | Path, repo_type: str | None = None, **kw) -> Path:
    """huggingface_hub.snapshot_download into `local_dir` (resumable: finished files are kept)."""
    import huggingface_hub

    local_dir = Path(local_dir)
    print(
        f"downloading {repo_id} ({repo_type or 'model'}) into {local_dir} "
        "(files already there are skipped)"
    )
    try:
        huggingface_hub.snapshot_download(
            repo_id=repo_id, repo_type=repo_type, local_dir=str(local_dir), **kw
        )
    except Exception as err:  # noqa: BLE001 - network/auth errors become one readable line
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"downloading {repo_id} failed: {msg}; check the network and "
            "`hf auth login`, then re-run (finished files are kept)"
        ) from err
    return local_dir

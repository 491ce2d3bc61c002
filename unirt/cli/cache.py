"""``unirt cache info | list | clear``: see and prune the artifact cache.

A click group of its own so the core CLI adds it with one line (``cli.add_command(cache)``); the
errors it raises are :class:`~unirt.errors.UnirtError`, which the top-level group prints as one
line.
"""

from __future__ import annotations

import time
from typing import Any

import click

from unirt.cli import output as cli_output
from unirt.store.cache import ArtifactCache, format_size, parse_duration

_emit_json = cli_output.print_json


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _dir_option(f: Any) -> Any:
    return click.option("--dir", "root", default=None, metavar="PATH",
                        help="Cache directory (default: $UNIRT_CACHE_DIR or the user cache).")(f)


@click.group()
def cache() -> None:
    """Show and prune the artifact cache (converted models, engines, compiled blobs)."""


@cache.command()
@_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(root: str | None, as_json: bool) -> None:
    """Where the cache is and how much it holds, per backend."""
    data = ArtifactCache(root).info()
    if as_json:
        _emit_json(data)
        return
    click.echo(f"path: {data['path']}")
    if data["problem"]:
        click.echo(f"not usable: {data['problem']} (unirt works without a cache)")
    click.echo(f"entries: {data['entries']}  size: {format_size(data['size_bytes'])}")
    for name, b in data["backends"].items():
        click.echo(f"  {name}: {b['entries']} entries, {format_size(b['size_bytes'])}")
    scratch = data["scratch"]
    if scratch["dirs"]:
        # Build directories of killed processes, and trash: `unirt cache clear` removes the
        # stale ones (any load sweeps them too).
        click.echo(f"scratch: {scratch['dirs']} unfinished build or trash director"
                   f"{'y' if scratch['dirs'] == 1 else 'ies'}, "
                   f"{format_size(scratch['size_bytes'])} ({scratch['stale']} stale)")


@cache.command(name="list")
@_dir_option
@click.option("--backend", default=None, help="Only this backend's entries.")
@click.option("--verify", is_flag=True, help="Re-check every file's checksum (reads them all).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(root: str | None, backend: str | None, verify: bool, as_json: bool) -> None:
    """Every entry: backend, key, size, last use, the model it came from."""
    entries = list(ArtifactCache(root).entries(backend, verify=verify))
    if as_json:
        _emit_json([e.as_dict() for e in entries])
        return
    if not entries:
        click.echo("the cache is empty")
        return
    for e in entries:
        model = e.meta.get("model", "")
        shapes = e.meta.get("shapes", "")
        state = "" if e.valid else "  INVALID"
        click.echo(f"{e.backend:12} {e.key[:16]}  {format_size(e.size_bytes):>10}  "
                   f"used {_when(e.last_used)}  {model} {shapes}{state}".rstrip())


@cache.command()
@_dir_option
@click.option("--backend", default=None, help="Only this backend's entries.")
@click.option("--older-than", default=None, metavar="AGE",
              help="Only entries unused for longer than AGE (e.g. 30m, 12h, 7d, 2w).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def clear(root: str | None, backend: str | None, older_than: str | None, as_json: bool) -> None:
    """Remove entries: all of them, one backend's, or those not used for a while."""
    age = parse_duration(older_than) if older_than is not None else None
    removed = ArtifactCache(root).clear(backend=backend, older_than=age)
    freed = sum(e.size_bytes for e in removed)
    if as_json:
        _emit_json({"removed": len(removed), "freed_bytes": freed,
                    "entries": [e.as_dict() for e in removed]})
        return
    click.echo(f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'}, "
               f"freed {format_size(freed)}")

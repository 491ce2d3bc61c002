"""``unirt backends`` and ``unirt plugins``: what is installed, and from which plugin."""

from __future__ import annotations

import click

from unirt.cli.output import console, print_json, table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def backends(as_json: bool) -> None:
    """List the registered backends: available?, version, devices, why not, how to install."""
    from unirt.plugin.inventory import backends as list_backends
    from unirt.plugin.registry import get_registry

    statuses = list_backends()
    broken = [r for r in get_registry().records.values() if r.error]
    if as_json:
        print_json({"backends": [s.as_dict() for s in statuses],
                     "broken_plugins": [r.as_dict() for r in broken]})
        return
    rows = []
    for s in statuses:
        why = "" if s.available else f"{s.reason}" + (
            f"\ninstall: {s.install_hint}" if s.install_hint else "")
        rows.append([s.name, "yes" if s.available else "no", s.version or "-",
                     ", ".join(s.devices) or "-", why])
    con = console()
    con.print(table("Backends", ["backend", "available", "version", "devices", "why not"], rows))
    for r in broken:
        con.print(f"[yellow]plugin {r.name} ({r.source}) failed to load: {r.error}[/yellow]")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """List plugins (built-in and installed), the backends each provides, and load errors."""
    from unirt.plugin.registry import get_registry

    reg = get_registry()
    reg.backends  # noqa: B018 - collecting backends fills each record's backend list
    records = list(reg.records.values())
    if as_json:
        print_json([r.as_dict() for r in records])
        return
    rows = []
    for r in records:
        state = "disabled" if r.disabled else ("loaded" if r.loaded else "error")
        rows.append([r.name, r.source, state, ", ".join(r.backends) or "-", r.error or ""])
    console().print(table("Plugins", ["plugin", "source", "state", "backends", "error"], rows))

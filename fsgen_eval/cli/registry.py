"""``fsgen-eval methods``: every registered method and router with its parameters, defaults and help.

Read from ``fsgen_eval.core.registry`` (torch-free), so it lists what ``FSGEN_PLUGINS`` modules add too.
"""

from __future__ import annotations

import argparse

from fsgen_eval.core import registry


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fsgen-eval methods`` to the dispatcher's subparsers."""
    p = subparsers.add_parser("methods", help="list the registered methods and routers and their parameters")
    p.set_defaults(func=cmd_methods)


def _params(spec: registry.MethodSpec | registry.RouterSpec) -> list[str]:
    return [f"    {p.name}={p.default!r}" + (f"  {p.help}" if p.help else "") for p in spec.params]


def describe() -> str:
    """The registries as text: one line per entry (its flags in brackets), then one per parameter."""
    lines = ["methods (method=NAME):"]
    for name in registry.METHODS:
        m = registry.METHODS[name]
        flags = [f"loop={m.loop}"] + ["needs small_base"] * m.needs_small_base
        lines += [f"  {name} [{', '.join(flags)}]  {m.doc}", *_params(m)]
    lines.append("routers (router=NAME):")
    for name in registry.ROUTERS:
        r = registry.ROUTERS[name]
        flags = (["never calls System 2"] * r.never_calls + ["always calls System 2"] * r.always_calls
                 + ([f"signal={r.signal} ({r.calls_when})"] if r.signal else []))
        lines += [f"  {name}" + (f" [{', '.join(flags)}]" if flags else "") + f"  {r.doc}", *_params(r)]
    return "\n".join(lines)


def cmd_methods(args: argparse.Namespace) -> int:
    """``fsgen-eval methods``: print :func:`describe`."""
    print(describe())
    return 0

"""``stance follow --vllm URL SPEC...``: keep a running vLLM on what its specs select now.

Registered in ``cli/main.py``; the work is in ``registry.serving.follow``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated

import typer

from cli import context
from cli.output import emit, errors, say, warn

if TYPE_CHECKING:
    from registry.serving.follow import Move

FOLLOW_LOG = "registry.serving.follow"


class _Warnings(logging.Handler):
    """The follower's log lines as the CLI's ``warning:`` lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        warn(record.getMessage())


def follow(
    specs: Annotated[
        list[str],
        typer.Argument(
            metavar="SPEC",
            help='Specs exactly as clients send them in "model", e.g. curious-uncertainty@prod',
        ),
    ],
    vllm: Annotated[str, typer.Option(metavar="URL", help="The vLLM server, e.g. http://gpu:8000")],
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between polls")] = 5.0,
    once: Annotated[bool, typer.Option("--once", help="Poll once and exit")] = False,
    rounds: Annotated[
        int | None, typer.Option(min=1, help="Poll this many times, then exit")
    ] = None,
    load: Annotated[
        bool,
        typer.Option(
            "--load/--no-load",
            help="Load the new version at once (--no-load: the resolver plugin loads it on the "
            "next request)",
        ),
    ] = True,
    base_model: Annotated[
        str | None,
        typer.Option(metavar="ID", help="The base model id, when vLLM serves a local path"),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="VLLM_API_KEY", help="vLLM's --api-key")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --once or --rounds: the moves as one JSON list.")
    ] = False,
) -> None:
    """Keep a running vLLM on what its specs select now (verified first; see the README)."""
    bounded = 1 if once else rounds
    if as_json and bounded is None:
        raise typer.BadParameter("--json needs --once or --rounds", param_hint="--json")
    from registry.serving.follow import VllmEndpoints, VllmFollower

    handler = _Warnings()
    logging.getLogger(FOLLOW_LOG).addHandler(handler)
    try:
        with errors(as_json=as_json), context.open_registry() as registry:
            engine = VllmEndpoints(vllm, api_key=api_key)
            try:
                follower = VllmFollower(registry, engine, specs, load=load, base_model=base_model)
                if once:  # one round: a registry or vLLM that cannot be reached is an error
                    moves = follower.check()
                    report = None
                else:
                    report = None if as_json else (lambda m: say(_line(m)))
                    moves = follower.run(interval=interval, rounds=rounds, report=report)
            except KeyboardInterrupt:
                moves, report = [], None
            finally:
                engine.close()
    finally:
        logging.getLogger(FOLLOW_LOG).removeHandler(handler)
    found = [m.as_dict() for m in moves]
    if report is None:
        emit(found, as_json=as_json, human=lambda: [say(_line(m)) for m in moves])


def _line(move: Move) -> str:
    if move.action == "refused":
        return f"{move.name}: did not offer {move.version}: {move.reason}"
    held = f" (vLLM held {move.previous})" if move.previous else ""
    return f"{move.name}: {move.action} as {move.version}{held}"

"""A socket request, run by the agent: the op name picks the Agent method, whose typed
result is encoded here into the reply's JSON (docs/socket-protocol.md).

The offline commands (``etcd-backup-agent restore``, ``inspect``...) call ``dispatch`` too,
so their ``--json`` output is the socket's reply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from ..catalog import Catalog
from ..config import Settings
from ..errors import UsageError
from ..events import Emit
from ..keyspace.requests import DiffRequest, ExtractRequest, InspectRequest
from ..requests import (
    Args,
    BundleRequest,
    DrillRequest,
    IdentityRef,
    PruneRequest,
    VerifyRequest,
)
from ..restore.options import RestoreOptions
from ..retention import report_dict
from ..service import Agent


def _list(catalog: Catalog) -> dict[str, Any]:
    return {
        "backups": [m.to_dict() for m in catalog.backups],
        "orphans": list(catalog.orphans),
        "incomplete": [
            {"id": i.manifest.id, "object": i.manifest.object, "reason": i.reason}
            for i in catalog.incomplete
        ],
        "complete": catalog.complete,
    }


def _backup(agent: Agent, args: Args, emit: Emit) -> dict[str, Any]:
    manifest = agent.backup("request", emit)
    return {**manifest.to_dict(), "store": agent.wiring.store.describe()}


def _bundle_list(agent: Agent, args: Args, emit: Emit) -> dict[str, Any]:
    m = agent.bundle_of(BundleRequest.from_args(args).backup)
    return {"backup": m.id, "bundle": asdict(m.bundle) if m.bundle is not None else None}


Handler = Callable[[Agent, Args, Emit], Any]
# op -> decode the arguments, run, encode the result
HANDLERS: dict[str, Handler] = {
    "status": lambda agent, args, emit: agent.status().to_wire(),
    "list": lambda agent, args, emit: _list(agent.list()),
    "backup": _backup,
    "verify": lambda agent, args, emit: agent.verify(VerifyRequest.from_args(args), emit).to_dict(),
    "prune": lambda agent, args, emit: report_dict(agent.prune(PruneRequest.from_args(args))),
    "restore": lambda agent, args, emit: agent.restore(
        RestoreOptions.from_args(args), IdentityRef.from_args(args), emit
    ).to_dict(),
    "drill": lambda agent, args, emit: agent.drill(DrillRequest.from_args(args), emit).to_dict(),
    "bundle_list": _bundle_list,
    "bundle_extract": lambda agent, args, emit: agent.bundle_extract(
        BundleRequest.from_args(args), emit
    ),
    "inspect": lambda agent, args, emit: agent.inspect(
        InspectRequest.from_args(dict(args)), IdentityRef.from_args(args), emit
    ).to_dict(),
    "diff": lambda agent, args, emit: agent.diff(
        DiffRequest.from_args(dict(args)), IdentityRef.from_args(args), emit
    ).to_dict(),
    "extract": lambda agent, args, emit: agent.extract(
        ExtractRequest.from_args(dict(args)), IdentityRef.from_args(args), emit
    ).to_dict(),
}


def dispatch(agent: Agent, op: str, args: Args, emit: Emit) -> Any:
    """Run ``op``; its JSON-able reply, or an AgentError."""
    handler = HANDLERS.get(op)
    if handler is None:
        raise UsageError(f"unknown operation {op!r}")
    return handler(agent, args, emit)


def dispatch_offline(settings: Settings, op: str, args: Args, emit: Emit) -> Any:
    """Run ``op`` in this process (an offline command): the same agent code, no daemon."""
    agent = Agent(settings)
    try:
        return dispatch(agent, op, args, emit)
    finally:
        agent.close()

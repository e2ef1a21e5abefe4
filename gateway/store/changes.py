"""What the admin API asks of the process that owns the config: a `ConfigChange`.

A change is asked for in whichever process took the request (a worker of `gateway serve
--workers N` sends it to the parent, pickled) and made there, one at a time with reloads
(`gateway.reload.SerialReloads.change`): `prepare` turns it into a transaction against the
config as it is then, the transaction is committed (its files put in place), the new config
directory is staged as any reload is (validated, runtimes started, warmed), a refused stage
reverts the transaction, and the swap marks it served (the atomic switch a restart keeps), so a
change either serves or leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.manifests import Config
from gateway.store.journal import ConfigStore, Transaction


@dataclass
class Prepared:
    """A change as a transaction, and what to tell its caller once it serves (`detail`)."""

    transaction: Transaction
    detail: dict[str, Any] = field(default_factory=dict)


class ConfigChange(Protocol):
    """A change to the config directory (picklable: it may travel to the parent process)."""

    def prepare(self, config: Config, store: ConfigStore) -> Prepared:
        """The transaction making this change to `config` (the config serving now), checked
        against it: ConfigError (422) for what would be invalid, Conflict (409), NotFound (404).
        Nothing in the config directory changes until the transaction is committed."""
        ...

"""Who may sign in to the console, with what, and in which role: read from ``[operators.<name>]``.

An operator signs in with a password (``password_hash``, made by ``paygate console
hash-password``) or, when ``[console] token_sign_in`` is on, with the operator token the admin API
takes, but only if that token is all the admin API asks of them (``auth = "token"``): an operator
who must also present a client certificate cannot sign in to the console with the token alone.
The role (viewer, operator, approver) decides what the console lets them do, on the server, for
every request (:mod:`gateway.console.access`).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.security import passwords
from gateway.security.principals import OperatorTable, Role

__all__ = ["ConsoleOperator", "OperatorDirectory", "Role", "directory_from_config"]


@functools.cache
def _dummy_hash() -> str:
    """What an unknown name is checked against, so that "no such operator" costs what "wrong password" does."""
    return passwords.hash_password("paygate-console-no-such-operator")


@dataclass(frozen=True)
class ConsoleOperator:
    name: str
    role: Role
    token: str = ""  # "" when the operator may not sign in with a token
    password_hash: str = ""  # "" when the operator has no console password


class OperatorDirectory:
    """The configured operators, found by name (password sign-in) or by token (constant time)."""

    def __init__(self, operators: Mapping[str, ConsoleOperator], *, token_sign_in: bool = True) -> None:
        self._operators = dict(operators)
        self.token_sign_in = token_sign_in

    def get(self, name: str) -> ConsoleOperator | None:
        return self._operators.get(name)

    def by_token(self, token: str) -> ConsoleOperator | None:
        if not self.token_sign_in or not token:
            return None
        presented = token.encode()
        found: ConsoleOperator | None = None
        for operator in self._operators.values():  # no early exit: constant work whatever matches
            if operator.token and hmac.compare_digest(operator.token.encode(), presented):
                found = operator
        return found

    async def by_password(self, name: str, password: str) -> ConsoleOperator | None:
        """The operator if ``password`` is theirs; verified in a worker thread (scrypt is slow on purpose)."""
        operator = self._operators.get(name)
        encoded = operator.password_hash if operator is not None and operator.password_hash else _dummy_hash()
        matches = await asyncio.to_thread(passwords.verify, password, encoded)
        if operator is None or not operator.password_hash or not matches:
            return None
        return operator

    def session_credential(self, operator: ConsoleOperator) -> str:
        """The credential a session of ``operator`` stays valid with (both kinds: either one changing ends it)."""
        return f"{operator.token}\n{operator.password_hash}"


def console_operator(name: str, table: OperatorTable) -> ConsoleOperator:
    token = table.token.reveal() if table.token is not None and table.mode == "token" else ""
    return ConsoleOperator(name, table.role, token=token, password_hash=table.password_hash or "")


def directory_from_config(operators: Mapping[str, OperatorTable], *, token_sign_in: bool) -> OperatorDirectory:
    """The console's operators: every ``[operators.<name>]`` with its role, password hash and (token-only) token."""
    return OperatorDirectory(
        {name: console_operator(name, table) for name, table in operators.items()}, token_sign_in=token_sign_in
    )

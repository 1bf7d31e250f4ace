"""``paygate console hash-password``: the line to put in ``[operators.<name>] password_hash``."""

from __future__ import annotations

import argparse
import getpass
import sys

from gateway.security.passwords import hash_password

MIN_LENGTH = 12


def hash_password_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="paygate console hash-password",
        description="Reads a password (twice, not echoed; or one line from standard input with --stdin)"
        " and prints its scrypt hash for [operators.<name>] password_hash.",
    )
    parser.add_argument("--stdin", action="store_true", help="read the password from standard input")
    ns = parser.parse_args(argv)
    if ns.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("paygate: the two passwords differ", file=sys.stderr)
            return 2
    if len(password) < MIN_LENGTH:
        print(f"paygate: a console password needs at least {MIN_LENGTH} characters", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0

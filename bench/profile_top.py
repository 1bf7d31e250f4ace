"""Where a py-spy profile spends its samples: ``python -m bench.profile_top FILE [--top 25]``.

Reads py-spy's ``--format raw`` output (collapsed stacks: ``frame;frame;... count``)
and prints the functions with the most samples, by *self* time (the leaf
frame) and by *inclusive* time (anywhere in the stack, once per stack), each
as a share of all samples. ``--idle`` keeps the event loop's idle wait
(``select``/``epoll``) and threads with no Python frame below ``Thread.run``
(gRPC's native engine threads, which py-spy samples as busy while they wait;
``/proc`` per-thread CPU shows them at a few percent of the gateway's), left
out by default so the shares are of the main thread's busy time.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_IDLE_LEAF = ("(asyncio/selectors.py", "(selectors.py", "select (")


def _frame(raw: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``: lines of one function counted together."""
    match = re.match(r"^(.*?) \((.*?)(?::\d+)?\)$", raw.strip())
    if not match:
        return raw.strip()
    func, path = match.groups()
    return f"{func} ({path.rsplit('/', 2)[-2] + '/' if '/' in path else ''}{path.rsplit('/', 1)[-1]})"


def load(path: Path, *, idle: bool = False) -> tuple[Counter[str], Counter[str], int]:
    """(self samples, inclusive samples, total samples) per function."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        if not idle and (any(marker in frames[-1] for marker in _IDLE_LEAF) or frames[-1].startswith("Thread.run ")):
            continue  # the loop's wait, or a thread in native code only (gRPC's engine: mostly waiting, see the doc)
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return own, inclusive, total


def report(path: Path, top: int = 25, *, idle: bool = False) -> str:
    own, inclusive, total = load(path, idle=idle)
    if not total:
        return f"{path}: no samples"
    lines = [f"{path}: {total} busy samples" + (" (idle included)" if idle else "")]
    lines.append("  self  function")
    lines += [f"  {n * 100 / total:4.1f}% {name}" for name, n in own.most_common(top)]
    lines.append("  incl  function")
    lines += [f"  {n * 100 / total:4.1f}% {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.profile_top", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("file")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--idle", action="store_true")
    a = p.parse_args(argv)
    print(report(Path(a.file), a.top, idle=a.idle))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

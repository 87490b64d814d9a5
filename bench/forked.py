"""What the fuzzers share (fuzz_images.py, fuzz_packages.py): each input handled in a process
forked for it, under a memory limit and a timeout, so a crash, a hang or a runaway allocation is
counted instead of ending the run."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
from pathlib import Path
from typing import Any, Callable


def fuzz_parser(description: str, count_flag: str, default_count: int, default_timeout: float) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(count_flag, type=int, default=default_count)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=default_timeout)
    parser.add_argument("--memory-gb", type=float, default=2.0)
    return parser


def _child(work: Callable[..., tuple], args: tuple, memory_bytes: int, connection) -> None:
    # more address space than the child starts with (torch's libraries alone map gigabytes)
    in_use = os.sysconf("SC_PAGE_SIZE") * int(Path("/proc/self/statm").read_text().split()[0])
    resource.setrlimit(resource.RLIMIT_AS, (in_use + memory_bytes, in_use + memory_bytes))
    connection.send(work(*args))


def run_forked(work: Callable[..., tuple], args: tuple, timeout: float, memory_bytes: int) -> tuple[str, str, Any]:
    """``work(*args)`` → (outcome, detail, extra) in a forked child; ("timeout", "", None) or
    ("crash", "exit N", None) when it never reports."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(work, args, memory_bytes, sender))
    child.start()
    sender.close()
    child.join(timeout)
    if child.is_alive():
        child.kill()
        child.join()
        return "timeout", "", None
    if child.exitcode != 0 or not receiver.poll():
        return "crash", f"exit {child.exitcode}", None
    return receiver.recv()

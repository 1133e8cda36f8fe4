"""``streamrec <verb>``: one front door to the components' command lines.

Each verb runs a component's own ``python -m`` command, which keeps working and holds the options; this module only
maps names, so it imports nothing heavy and adds no behaviour of its own:

    streamrec up [--brokers 3]          Kafka (KRaft) and Redis on 127.0.0.1        python -m infra.local up
    streamrec down                       stop what ``up`` started                     python -m infra.local down
    streamrec worker                     a stream worker (Faust)                      python -m stream worker
    streamrec serve                      the HTTP endpoint                            python -m serving
    streamrec simulate [--rate 50 ...]   the closed-loop click simulator              python -m simulator run
    streamrec replay --dataset ...       a real log into ``clicks``                   python -m simulator replay
    streamrec train --out gru.pt ...     GRU4Rec offline                              python -m models train
    streamrec publish --model gru.pt     a trained model as a new major version       python -m models publish
    streamrec monitor                    the live terminal view of the metrics        python -m stream monitor
    streamrec report --out DIR           plots and a summary of a run                 python -m stream report

>>> resolve(["worker", "--loglevel", "warn"])
('stream', ['worker', '--loglevel', 'warn'])
>>> resolve(["serve", "--port", "8001"])
('serving', ['--port', '8001'])
"""

from __future__ import annotations

import runpy
import sys

VERBS: dict[str, tuple[str, list[str], str]] = {
    "up": ("infra.local", ["up"], "start Kafka (KRaft) and Redis on 127.0.0.1"),
    "down": ("infra.local", ["down"], "stop what `up` started"),
    "worker": ("stream", ["worker"], "run a stream worker"),
    "serve": ("serving", [], "run the HTTP endpoint"),
    "simulate": ("simulator", ["run"], "run the closed-loop click simulator"),
    "replay": ("simulator", ["replay"], "publish a real log into the clicks topic"),
    "train": ("models", ["train"], "train GRU4Rec offline"),
    "publish": ("models", ["publish"], "publish a trained GRU4Rec as a new major version"),
    "monitor": ("stream", ["monitor"], "live terminal view of the online metrics"),
    "report": ("stream", ["report"], "plots and a markdown summary of a run"),
}


def resolve(argv: list[str]) -> tuple[str, list[str]]:
    """The module to run and its arguments for ``streamrec <verb> [args]``."""
    module, prefix, _ = VERBS[argv[0]]
    return module, prefix + argv[1:]


def usage() -> str:
    lines = ["usage: streamrec <verb> [options]   (streamrec <verb> --help for a verb's options)", "", "verbs:"]
    lines += [f"  {verb:<9} {text}" for verb, (_, _, text) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] not in VERBS:
        print(f"streamrec: unknown verb {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, args = resolve(argv)
    sys.argv = [f"streamrec {argv[0]}", *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:  # the component's own exit status
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0

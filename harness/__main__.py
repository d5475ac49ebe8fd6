"""int4-harness: verify, benchmark and report on INT4 + LoRA kernels.

    python -m int4_lora_harness verify [--linear|--dequantizer TARGET] ...   (also: int4-verify ...)
    python -m int4_lora_harness bench --linear TARGET --grid smoke
    python -m int4_lora_harness report [--reports reports]

Each subcommand's flags are defined next to its code (verify/cli.py, report/cli.py); this module
only dispatches. Heavy modules (torch, hypothesis, matplotlib, pandas) load after the arguments
are parsed, so `--help` is quick.
"""
import argparse
import os
import sys

from int4_lora_harness import __version__
from int4_lora_harness.bench import cli as bench_cli
from int4_lora_harness.checkpoints import cli as real_weights_cli
from int4_lora_harness.report import cli as report_cli
from int4_lora_harness.verify import cli as verify_cli


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (and exit status 2), not the whole usage text."""

    def error(self, message):
        self.exit(2, f"usage error: {self.prog}: {message}\n")


def parser():
    p = Parser(prog="int4-harness", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"int4-lora-harness {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    verify_cli.add_arguments(sub.add_parser("verify", help="judge the project's backends or a TARGET against the contract",
                                            description=verify_cli.DESCRIPTION,
                                            formatter_class=argparse.RawDescriptionHelpFormatter))
    report_cli.add_arguments(sub.add_parser("report", help="write reports/index.html from the verify and benchmark runs"))
    real_weights_cli.add_arguments(sub.add_parser("real-weights", help="RTN SQNR on MiniLM-L6 -> reports/real_weights.json"))
    bench_cli.add_arguments(sub.add_parser("bench", help="time a TARGET beside the baselines and the project's backends",
                                           description=bench_cli.__doc__,
                                           formatter_class=argparse.RawDescriptionHelpFormatter))
    return p


def main(argv=None):
    """The exit status of one command; an interrupted verify exits 1 once its verdict says 'interrupted'."""
    try:
        return command(sys.argv[1:] if argv is None else list(argv))
    except KeyboardInterrupt:
        return 1


def command(argv):
    """The exit status of one command (KeyboardInterrupt propagates: the pytest plugin calls this)."""
    sys.stdout.reconfigure(line_buffering=True)  # piped output arrives as it is printed
    args = parser().parse_args(argv)
    if args.command == "verify":
        return run_verify(args, argv[1:])
    commands = {"real-weights": real_weights_cli.run, "bench": bench_cli.run, "report": report_cli.run}
    return commands[args.command](args)


def run_verify(args, argv):
    """harness.verify.main.run, imported (torch, hypothesis) once the flags are parsed, OpenMP's threads set passive
    where torch is not loaded yet (harness.verify.limits.THREAD_WAIT; a process that has it, a pytest session under
    the plugin, keeps its environment as it is: only the candidate's gets the setting)."""
    from int4_lora_harness.verify.limits import passive_threads
    if "torch" not in sys.modules:
        passive_threads(os.environ)
    from int4_lora_harness.verify.main import run
    return run(args, argv)


def verify_parser():
    """The `int4-verify` console script's parser: `int4-harness verify`'s flags, under its own name (its --help
    says `usage: int4-verify`, its errors `usage error: int4-verify: ...`)."""
    return verify_cli.add_arguments(Parser(prog="int4-verify", description=verify_cli.DESCRIPTION,
                                           formatter_class=argparse.RawDescriptionHelpFormatter))


def verify_main(argv=None):
    """The `int4-verify` console script: `int4-harness verify` without the subcommand word."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        sys.stdout.reconfigure(line_buffering=True)  # piped output arrives as it is printed
        return run_verify(verify_parser().parse_args(argv), argv)
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":
    sys.exit(main())

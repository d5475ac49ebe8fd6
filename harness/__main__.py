"""int4-harness: verify, benchmark and report on INT4 + LoRA kernels.

    python -m int4_lora_harness verify [--linear|--dequantizer TARGET] ...   (also: int4-verify ...)
    python -m int4_lora_harness report [--reports reports]

Each subcommand's flags are defined next to its code (verify/cli.py, report/cli.py); this module
only dispatches. Heavy modules (torch, hypothesis, matplotlib, pandas) load after the arguments
are parsed, so `--help` is quick.
"""
import argparse
import sys

from int4_lora_harness import __version__
from int4_lora_harness.report import cli as report_cli
from int4_lora_harness.verify import cli as verify_cli


def parser():
    p = argparse.ArgumentParser(prog="int4-harness", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"int4-lora-harness {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    verify_cli.add_arguments(sub.add_parser("verify", help="judge the project's backends or a TARGET against the contract",
                                            description=verify_cli.DESCRIPTION,
                                            formatter_class=argparse.RawDescriptionHelpFormatter))
    report_cli.add_arguments(sub.add_parser("report", help="write reports/index.html from the verify and benchmark runs"))
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    return {"verify": verify_cli.run, "report": report_cli.run}[args.command](args)


def verify_main(argv=None):
    """The `int4-verify` console script: `int4-harness verify` without the subcommand word."""
    return main(["verify", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

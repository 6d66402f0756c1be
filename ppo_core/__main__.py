"""Command line: `python -m ppo_core {cartpole,rlhf,dpo,doctor} ...`; `--help` on each says how."""

from __future__ import annotations

import sys

USAGE = """usage: python -m ppo_core COMMAND [options]

commands:
  cartpole   train PPO on a gymnasium control task (CartPole-v1 by default)
  rlhf       RLHF with token-level PPO on the tiny GPT-2 (or gpt2 / a local path); also
             GRPO, RLOO, KL in the loss, clip-higher, PPO-ptx (--advantage, --kl-in, ...)
  dpo        Direct Preference Optimisation on simulated preference pairs
  doctor     read a JSONL metrics log and name the training failures it shows

`python -m ppo_core COMMAND --help` documents every flag of COMMAND."""


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "cartpole":
        from .trainers.cartpole import cli_main
    elif command == "rlhf":
        from .trainers.rlhf import cli_main
    elif command == "dpo":
        from .trainers.dpo import cli_main
    elif command == "doctor":
        from .diagnostics import cli_main
    else:
        print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return int(cli_main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())

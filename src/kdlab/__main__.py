"""``python -m kdlab`` (and ``torchrun -m kdlab``) -> the kdlab CLI."""

from kdlab.cli import main

main()

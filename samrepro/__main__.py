"""``python -m samrepro …`` is the ``samrepro`` command."""

from samrepro.cli import main

main()

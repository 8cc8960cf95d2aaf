"""``python -m tuner`` works like ``tuner``."""

from tuner.cli import main

main()

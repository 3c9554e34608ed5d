"""`python -m converter` runs the same command line as `dataset-converter`."""

from converter.cli import main

main()

"""The ``forge-advisor`` command line: one module per command."""

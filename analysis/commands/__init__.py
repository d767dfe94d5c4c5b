"""Subcommands of the ``mfvi`` command line, one module each (see ``analysis.cli``)."""

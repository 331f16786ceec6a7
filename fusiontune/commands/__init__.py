"""One module per ``fusiontune`` subcommand (see ``fusiontune/cli.py``)."""

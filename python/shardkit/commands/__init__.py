"""Subcommands of the ``shardkit`` CLI, one module each (see shardkit.cli)."""

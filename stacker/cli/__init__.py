"""The `stack` command-line application: typer commands over the library (see ``app``)."""

"""`stack first-level ...`: commands that train fold models and write the standard layout.

Each command module defines plain typer command functions; they are registered on this sub-app,
which stacker/cli.py mounts as `stack first-level`.
"""

import typer

from stacker.cli.help import StackCommand, StackGroup

first_level_app = typer.Typer(help="Train first-level fold models into the layout.",
                              no_args_is_help=True, cls=StackGroup)

# --- first-level command registration: one block per command module ---
from stacker.cli.sklearn import sklearn_command  # noqa: E402

first_level_app.command("sklearn", cls=StackCommand)(sklearn_command)
from stacker.cli.audio import audio_command, audio_features_command  # noqa: E402

first_level_app.command("audio", cls=StackCommand)(audio_command)
first_level_app.command("audio-features", cls=StackCommand)(audio_features_command)
# --- end of first-level command registration ---

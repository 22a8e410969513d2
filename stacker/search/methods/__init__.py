"""The selection methods of the subset search, one module per family."""

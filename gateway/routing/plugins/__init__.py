"""One module per routing plugin; each module docstring states its formula and parameters."""

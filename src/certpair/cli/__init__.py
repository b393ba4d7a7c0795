"""certpair's command-line interface: one module per command."""

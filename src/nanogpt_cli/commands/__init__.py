"""The `nanogpt` commands, one module per command: each parses its options, calls one core function
and renders the result with `render`. They hold no ML logic; `nanogpt_cli.cli` registers them."""

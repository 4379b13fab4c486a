"""nanogpt-cli: build, train and sample small GPT language models from the command line."""

__version__ = "0.1.0"

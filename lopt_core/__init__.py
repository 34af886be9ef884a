"""lopt_core: the library behind the LoPT prompt-tuning kit's notebooks and CLI."""
__version__ = "0.1.0"

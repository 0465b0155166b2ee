"""lookalike: does the compressed model behave like the large model it replaces?"""

__version__ = "0.1.0"

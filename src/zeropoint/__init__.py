"""Zeropoint: a training appliance on tinygrad with real compute and real evidence."""
__version__ = "0.1.0"

"""The version of hfox_fit (read by setup.cfg and hfox_fit.__version__)."""

__version__ = "0.1.0.dev0"

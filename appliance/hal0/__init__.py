"""hal0: a LAN inference appliance."""

__version__ = "0.1.0"

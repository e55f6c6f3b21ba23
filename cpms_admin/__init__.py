"""cpms-admin: the back-office for the accounts of the CPMS member portal."""

__version__ = "0.1.0"

"""Running the system: the schema and its upgrades, the pepper keyring's rotation, `doctor`."""

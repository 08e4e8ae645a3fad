"""ultron_nb."""

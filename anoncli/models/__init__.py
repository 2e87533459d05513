"""Network definitions only (torch modules, no weights loading or other I/O)."""

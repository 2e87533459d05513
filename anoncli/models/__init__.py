"""Network definitions (torch modules), and the readers of the official checkpoint formats that
fill them (checkpoint.py: torch state dicts; dlib_serialized.py: dlib's serialized networks)."""

"""The ``anoncli report`` command: measure an anonymized run and render it as one HTML page."""

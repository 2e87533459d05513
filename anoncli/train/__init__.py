"""Training procedures for the project's own networks (`anoncli train ...`)."""

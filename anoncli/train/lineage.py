"""The runs an exported network came from, so that a model card counts every step when a new work
folder starts from an export (`anoncli train ... --init-from`). Pure functions on the export's card."""
from __future__ import annotations


def continued_from(card: dict) -> tuple[int, float, list[dict]]:
    """An export's total steps, its training seconds, and its runs oldest first: the runs its own
    card lists (``history``) and the run that wrote it (step count, batch, time, machine, command)."""
    steps, seconds = int(card.get("steps", 0)), float(card.get("train_seconds", 0.0))
    history = list(card.get("history", []))
    history.append({"steps": steps - sum(run["steps"] for run in history),
                    "batch_size": card.get("settings", {}).get("batch_size"),
                    "train_seconds": round(seconds - sum(run["train_seconds"] for run in history)),
                    "machine": card.get("machine"), "command": card.get("command")})
    return steps, seconds, history


def run_lines(card: dict, settings: dict) -> list[str]:
    """Model-card lines, one per run: the earlier runs of ``card['history']``, then the run that wrote the card."""
    history = card.get("history", [])
    earlier = sum(run["steps"] for run in history)
    return [f"  - {run['steps']} steps at batch {run['batch_size']} in {run['train_seconds'] / 3600:.2f} h on {run['machine']}: "
            f"`{run['command']}`" for run in history] + [
        f"  - {card.get('steps', 0) - earlier} steps at batch {settings.get('batch_size')} on {card.get('machine', 'this machine')}: "
        f"`{card.get('command', '')}` (run again with the same --work folder to resume)"]

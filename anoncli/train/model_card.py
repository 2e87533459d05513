"""The model card written next to exported weights: data, command, steps, time, measured quality."""
from __future__ import annotations

import json
from pathlib import Path

from ..io.atomic import write_atomic


def aei_model_card(weights: Path, card: dict, sha256: str, size_bytes: int) -> str:
    ev = card.get("held_out_eval", {})
    s = card.get("settings", {})
    lines = [
        f"# {weights.name}",
        "",
        "The disentangling generator of `--method identitydp` and `--method idrotate` (book ch. 5, Table 8.3;",
        "METHODS.md §5-6): U-Net attribute encoder, AAD ResBlocks, trained with a multi-scale discriminator.",
        "",
        f"- file: `{weights.name}`, {size_bytes / 2 ** 20:.1f} MiB, sha256 `{sha256}`",
        f"- network: `{json.dumps(card.get('config', {}))}`",
        f"- identity vector: dlib ResNet descriptor (PyTorch port), centred and whitened on the training faces, unit length (d = 128)",
        f"- data: {', '.join(card.get('data', []))} from `../shared/data` ({card.get('train_faces')} training faces, "
        f"{card.get('held_out_faces')} held out: CelebA identities with identity mod 10 = 0, UTKFace files by name hash)",
        f"- steps: {card.get('steps')} at batch {s.get('batch_size')}, {card.get('train_seconds', 0) / 3600:.2f} h of training on "
        f"{card.get('machine', 'this machine')}",
        f"- losses: L_adv x {s.get('lambda_adv')} + L_att x {s.get('lambda_att')} + L_id x {s.get('lambda_id')} + L_rec x "
        f"{s.get('lambda_rec')}; Adam lr {s.get('lr')}, betas ({s.get('beta1')}, {s.get('beta2')}); same-face share {s.get('same_face')}; "
        f"synthetic-identity share {s.get('synthetic_identity', 0.0)}",
        f"- command: `{card.get('command', '')}` (run again with the same --work folder to resume)",
        "",
        f"## Held-out measurement ({ev.get('faces')} faces)",
        "",
        "| reconstruction PSNR | reconstruction SSIM | r_id cosine, reconstruction | r_id cosine to another face's identity (transfer) | dlib same person as that face (< 0.6) | random identity: dlib no longer the original (> 0.6) | r_id cosine, random identity | r_id cosine, identity turned 120° |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {ev.get('rec_psnr')} dB | {ev.get('rec_ssim')} | {ev.get('rec_id_cos')} | {ev.get('swap_id_cos')} | {ev.get('swap_same_person_dlib')} | {ev.get('random_identity_protection_dlib')} | {ev.get('random_id_cos', '-')} | {ev.get('turned_id_cos', '-')} |",
        "",
        "Licence: the code is MIT; the weights are derived from CelebA and UTKFace, whose terms allow",
        "non-commercial research only.",
    ]
    if card.get("notes"):
        lines += ["", "## Notes", ""] + [line for note in card["notes"] for line in (note, "")][:-1]
    return "\n".join(lines) + "\n"


def write_aei_model_card(weights: Path, card: dict) -> Path:
    from ..weights import sha256_of

    path = weights.with_suffix(".md")
    write_atomic(path, aei_model_card(weights, card, sha256_of(weights), weights.stat().st_size).encode())
    return path

"""The model card written next to exported weights: data, command, steps, time, measured quality."""
from __future__ import annotations

import json
from pathlib import Path

from ..io.atomic import write_atomic
from .lineage import run_lines


def _with_licence_and_notes(lines: list[str], card: dict) -> str:
    lines = lines + ["", "Licence: the code is MIT; the weights are derived from CelebA and UTKFace, whose terms allow",
                     "non-commercial research only."]
    if card.get("notes"):
        lines += ["", "## Notes", ""] + [line for note in card["notes"] for line in (note, "")][:-1]
    return "\n".join(lines) + "\n"


def _write_card(weights: Path, card: dict, render) -> Path:
    """``render(weights, card, sha256, size)`` written atomically as the .md beside the weights."""
    from ..weights import sha256_of

    path = weights.with_suffix(".md")
    write_atomic(path, render(weights, card, sha256_of(weights), weights.stat().st_size).encode())
    return path


def _file_network_and_aligned_data(weights: Path, card: dict, sha256: str, size_bytes: int) -> list[str]:
    """The card lines of a network trained on the aligned, resized, mirrored crops of train.face_crops."""
    s = card.get("settings", {})
    return [
        f"- file: `{weights.name}`, {size_bytes / 2 ** 20:.1f} MiB, sha256 `{sha256}`",
        f"- network: `{json.dumps(card.get('config', {}))}`",
        f"- data: {', '.join(card.get('data', []))} from `../shared/data` ({card.get('train_faces')} training faces, "
        f"{card.get('held_out_faces')} held out: CelebA identities with identity mod 10 = 0, UTKFace files by name hash), "
        f"aligned with margin {s.get('margin')}, area-resized, mirrored at random",
    ]


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
        "- identity vector: dlib ResNet descriptor (PyTorch port), centred and whitened on the training faces, unit length (d = 128)",
        *(["- discriminator: in the file (`disc.*`), so that `anoncli train aei --init-from` trains on with it; the methods "
           "do not read it"] if card.get("discriminator_included") else []),
        f"- data: {', '.join(card.get('data', []))} from `../shared/data` ({card.get('train_faces')} training faces, "
        f"{card.get('held_out_faces')} held out: CelebA identities with identity mod 10 = 0, UTKFace files by name hash)",
        f"- steps: {card.get('steps')} at batch {s.get('batch_size')}, {card.get('train_seconds', 0) / 3600:.2f} h of training on "
        f"{card.get('machine', 'this machine')}",
        f"- losses: L_adv x {s.get('lambda_adv')} + L_att x {s.get('lambda_att')} + L_id x {s.get('lambda_id')} + L_rec x "
        f"{s.get('lambda_rec')}"
        + (f" + perceptual (dlib ResNet's first blocks, same-face samples) x {s['lambda_perceptual']}" if s.get("lambda_perceptual") else "")
        + (f"; eyes and mouth weighed 1 + {s['component_weight']} in L_rec and the perceptual term" if s.get("component_weight") else "")
        + f"; Adam lr {s.get('lr')}, betas ({s.get('beta1')}, {s.get('beta2')}); same-face share {s.get('same_face')}; "
        f"synthetic-identity share {s.get('synthetic_identity', 0.0)}",
        *([f"- weights: the moving average of the generator's weights over the steps (decay {s['ema_decay']}), not its last step"]
          if s.get("ema_decay") else []),
        f"- command: `{card.get('command', '')}` (run again with the same --work folder to resume)",
        "",
        f"## Held-out measurement ({ev.get('faces')} faces)",
        "",
        "| reconstruction PSNR | reconstruction SSIM | r_id cosine, reconstruction | r_id cosine to another face's identity (transfer) | dlib same person as that face (< 0.6) | random identity: dlib no longer the original (> 0.6) | r_id cosine, random identity | r_id cosine, identity turned 120° |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {ev.get('rec_psnr')} dB | {ev.get('rec_ssim')} | {ev.get('rec_id_cos')} | {ev.get('swap_id_cos')} | {ev.get('swap_same_person_dlib')} | {ev.get('random_identity_protection_dlib')} | {ev.get('random_id_cos', '-')} | {ev.get('turned_id_cos', '-')} |",
    ]
    return _with_licence_and_notes(lines, card)


def glow_model_card(weights: Path, card: dict, sha256: str, size_bytes: int, samples: dict[float, str]) -> str:
    ev = card.get("held_out_eval", {})
    s = card.get("settings", {})
    lines = [
        f"# {weights.name}",
        "",
        "The flow of `--method flowrot` (FFEM, seed 001; METHODS.md §7): Glow with actnorm, LU-decomposed",
        "invertible 1x1 convolutions, affine couplings and learned priors, trained by bits per dimension.",
        "",
        *_file_network_and_aligned_data(weights, card, sha256, size_bytes),
        f"- training: Adam lr {s.get('lr')} after {s.get('warmup_steps')} warm-up steps (again after an --init-from), "
        f"gradient norm clipped to {s.get('max_grad_norm')}; {card.get('steps')} steps in all, "
        f"{card.get('train_seconds', 0) / 3600:.2f} h:",
        *run_lines(card, s),
        "",
        f"## Held-out measurement ({ev.get('faces')} faces)",
        "",
        f"| bits/dim ({card.get('config', {}).get('n_bits')}-bit colour, dequantised) | largest \\|f⁻¹(f(x)) − x\\| in float32 (x in [−0.5, 0.5]) |",
        "| --- | --- |",
        f"| {ev.get('bits_per_dim')} | {ev.get('round_trip_max_abs', float('nan')):.2e} |",
        "",
        "Samples (16 each, the same noise):",
        "",
    ] + [f"- temperature {t}: `{name}`" for t, name in sorted(samples.items())]
    return _with_licence_and_notes(lines, card)


def student_model_card(weights: Path, card: dict, sha256: str, size_bytes: int) -> str:
    ev = card.get("held_out_eval", {})
    s = card.get("settings", {})
    lines = [
        f"# {weights.name}",
        "",
        "The tiny student of flowrot's Glow (`--method flowrot --model student`; seed 000, MCKD; METHODS.md §7): a CNN",
        "encoder to the teacher's per-level latent ε and a CNN decoder back, distilled separately.",
        "",
        f"- file: `{weights.name}`, {size_bytes / 2 ** 20:.1f} MiB, sha256 `{sha256}`",
        f"- network: `{json.dumps(card.get('config', {}))}`",
        f"- teacher: sha256 `{s.get('teacher_sha256')}`",
        f"- data: {', '.join(card.get('data', []))} from `../shared/data` ({card.get('train_faces')} training faces, "
        f"{card.get('held_out_faces')} held out: CelebA identities with identity mod 10 = 0, UTKFace files by name hash)",
        f"- losses: decoder L1 + {s.get('lambda_percept')} x perceptual (dlib ResNet blocks) on real faces through the teacher's "
        f"encoder + {s.get('lambda_samples')} x L1 to the teacher's samples; encoder ‖γz − E_s(D_t(z))‖², γ = {s.get('gamma')}, "
        f"z ~ N(0, τ²I), τ in [{s.get('temperature_min')}, {s.get('temperature_max')}]",
        f"- steps: {card.get('steps')} at batch {s.get('batch_size')}, Adam lr {s.get('lr')}, "
        f"{card.get('train_seconds', 0) / 3600:.2f} h of training on {card.get('machine', 'this machine')}",
        f"- command: `{card.get('command', '')}` (run again with the same --work folder to resume)",
        "",
        f"## Held-out measurement ({ev.get('faces')} faces; PSNR on faces in [−0.5, 0.5])",
        "",
        "| student round trip D_s(E_s(x)) | decoder on the teacher's latent D_s(E_t(x)) | decoder vs teacher on samples at λ = 0.5 | encoder relative error ‖E_s(x)/γ − E_t(x)‖² / ‖E_t(x)‖² | teacher round trip |",
        "| --- | --- | --- | --- | --- |",
        f"| {ev.get('psnr_student_round_trip')} dB | {ev.get('psnr_decoder_on_teacher_latent')} dB | "
        f"{ev.get('psnr_decoder_on_samples_t05', '-')} dB | {ev.get('encoder_relative_error')} | {ev.get('psnr_teacher_round_trip')} dB |",
    ]
    return _with_licence_and_notes(lines, card)


def diffae_model_card(weights: Path, card: dict, sha256: str, size_bytes: int) -> str:
    ev = card.get("held_out_eval", {})
    s = card.get("settings", {})
    lines = [
        f"# {weights.name}",
        "",
        "The diffusion autoencoder of `--method diffusion` (thesis ch. 6, §6.4; Preechakul et al., CVPR 2022): a",
        "semantic encoder to a 512-d code z̄ and a conditional DDIM UNet ε_θ(x_t, t, z̄), the official design made small.",
        "",
        *_file_network_and_aligned_data(weights, card, sha256, size_bytes),
        f"- training: the noise-prediction loss on the linear schedule (β 1e-4 to 0.02, T = 1000), L_simple, or per face "
        f"max(1, 1/SNR_t) times it where a run's command says `--loss-weighting truncated-snr` (this run: "
        f"{s.get('loss_weighting', 'simple')}, forward pass in {s.get('precision', 'float32')}); Adam lr {s.get('lr')}, gradient norm clipped "
        f"to {s.get('max_grad_norm')}, EMA decay {s.get('ema_decay')} (the exported weights); {card.get('steps')} steps in all, "
        f"{card.get('train_seconds', 0) / 3600:.2f} h:",
        *run_lines(card, s),
        *([f"- code prior (in the file, `code_prior.*`, float32): a Gaussian over z̄ fitted to the codes of "
           f"{card['code_prior']['faces']} training faces, its covariance shrunk by {card['code_prior']['shrinkage']} toward "
           "its diagonal's mean; `--method diffusion` draws its fake set's codes from it (thesis §6.5.2 trains a latent "
           "DDIM instead)"] if card.get("code_prior") else []),
        "",
        f"## Held-out measurement ({ev.get('faces')} faces, {ev.get('ddim_steps')} DDIM steps)",
        "",
        "| reconstruction from (z̄, inverted x_T): PSNR | SSIM | from z̄ alone (random x_T): PSNR | SSIM |",
        "| --- | --- | --- | --- |",
        f"| {ev.get('inverted_psnr')} dB | {ev.get('inverted_ssim')} | {ev.get('semantic_only_psnr')} dB | {ev.get('semantic_only_ssim')} |",
    ]
    return _with_licence_and_notes(lines, card)


def attributes_model_card(weights: Path, card: dict, sha256: str, size_bytes: int) -> str:
    ev = card.get("held_out_eval", {})
    s = card.get("settings", {})
    lines = [
        f"# {weights.name}",
        "",
        "The offline attribute classifier of `--method diffusion` (thesis §6.5-6.6, where FaRL's ViT",
        "pairs faces and measures attribute preservation): a small CNN reading CelebA's 40 binary attributes.",
        "",
        *_file_network_and_aligned_data(weights, card, sha256, size_bytes),
        "- labels: CelebA's 40 attributes from `labels.csv` (faces without them, UTKFace, do not train)",
        f"- training: binary cross-entropy, AdamW lr {s.get('lr')}, weight decay {s.get('weight_decay')}, {card.get('steps')} "
        f"steps at batch {s.get('batch_size')}, {card.get('train_seconds', 0) / 3600:.2f} h on {card.get('machine', 'this machine')}",
        f"- command: `{card.get('command', '')}` (run again with the same --work folder to resume)",
        "",
        f"## Held-out measurement ({ev.get('faces')} CelebA faces of held-out identities)",
        "",
        f"Mean accuracy **{ev.get('mean_accuracy')}** (always answering each attribute's training majority: "
        f"{ev.get('majority_mean_accuracy')}).",
        "",
        "| attribute | accuracy | majority answer |",
        "| --- | --- | --- |",
    ] + [f"| {name} | {a} | {b} |" for name, (a, b) in ev.get("per_attribute", {}).items()]
    return _with_licence_and_notes(lines, card)


def write_attributes_model_card(weights: Path, card: dict) -> Path:
    return _write_card(weights, card, attributes_model_card)


def write_diffae_model_card(weights: Path, card: dict) -> Path:
    return _write_card(weights, card, diffae_model_card)


def write_student_model_card(weights: Path, card: dict) -> Path:
    return _write_card(weights, card, student_model_card)


def write_aei_model_card(weights: Path, card: dict) -> Path:
    return _write_card(weights, card, aei_model_card)


def write_glow_model_card(weights: Path, card: dict, sample_grids: dict[float, Path]) -> Path:
    """The card and, beside the weights, a copy of each sample grid (``<stem>-samples-t<T>.png``)."""
    names = {}
    for t, grid in sample_grids.items():
        name = f"{weights.stem}-samples-t{t}.png"
        write_atomic(weights.parent / name, Path(grid).read_bytes())
        names[t] = name
    return _write_card(weights, card, lambda w, c, sha256, size: glow_model_card(w, c, sha256, size, names))

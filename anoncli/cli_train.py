"""`anoncli train ...`: the project's own networks, trained with checkpoints and resume."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True, soft_wrap=True)

train_app = typer.Typer(help="Train the project's own networks (checkpoints and resume; see weights/README.md).",
                        no_args_is_help=True)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


# Options every `anoncli train` command takes, defined once.
DATA = typer.Option(..., "--data", help="A data set folder (images/ and optional labels.csv with an identity column); repeat for several.")
WORK = typer.Option(..., "--work", help="Work folder for the aligned faces, checkpoints and the log; running again with it resumes. Keep it outside the repository.")
CHECKPOINT_EVERY = typer.Option(200, "--checkpoint-every", min=1, help="Steps between checkpoints.")
EVALUATE_EVERY = typer.Option(1000, "--evaluate-every", min=20, help="Steps between held-out measurements in the log (a multiple of 20).")
THREADS = typer.Option(0, "--threads", min=0, help="torch threads (0: torch's default).")
DEVICE = typer.Option("auto", "--device", help="auto (a CUDA GPU when there is one), cpu, cuda or cuda:N; a checkpoint moves between them.")
SEED = typer.Option(0, "--seed", help="Seed of the face sampler and the initial weights (training only; never used for privacy noise).")
PROGRESS = typer.Option(True, "--progress/--no-progress", help="Show progress bars.")
CARD_NOTE = typer.Option([], "--card-note", help="A paragraph for the model card's notes (repeatable).")
MARGIN = typer.Option(0.2, "--margin", min=0.0, help="Border around the ArcFace template, as a fraction of it, in the aligned crops.")


def _check_folders(data: list[Path]) -> None:
    for d in data:
        if not d.is_dir():
            _fail(f"{d} is not a folder")


def _device(name: str) -> str:
    if name != "auto":
        if not (name == "cpu" or name == "cuda" or name.startswith("cuda:")):
            _fail(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@train_app.command("aei")
def train_aei(
    data: list[Path] = DATA,
    work: Path = WORK,
    steps: int = typer.Option(20000, "--steps", min=1, help="Train until this many generator steps in total."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Faces per step."),
    lr: float = typer.Option(4e-4, "--lr", min=0.0, help="Adam learning rate of generator and discriminator (book ch. 6.4.1)."),
    beta1: float = typer.Option(0.0, "--beta1", help="Adam β1 (book: 0)."),
    beta2: float = typer.Option(0.999, "--beta2", help="Adam β2 (book: 0.999)."),
    lambda_adv: float = typer.Option(1.0, "--lambda-adv", help="Weight of L_adv (book ch. 5: 1; ch. 6: 0.1)."),
    lambda_att: float = typer.Option(10.0, "--lambda-att", help="Weight of L_att (book: 10)."),
    lambda_id: float = typer.Option(5.0, "--lambda-id", help="Weight of L_id (book: 5)."),
    lambda_rec: float = typer.Option(10.0, "--lambda-rec", help="Weight of L_rec (book: 10)."),
    lambda_perceptual: float = typer.Option(0.0, "--lambda-perceptual", min=0.0, help="Weight of a perceptual distance between the "
                                            "reconstruction and the face, beside L_rec on the same-face samples: LPIPS's form on dlib's first "
                                            "residual blocks (not in the book; 0 = the book's losses)."),
    identity_on_composite: bool = typer.Option(False, "--identity-on-composite/--identity-on-face", help="Measure L_id on the generated face pasted "
                                               "into its target inside the identity methods' face region, as the methods use it (not in the book: "
                                               "L_id on the whole generated crop)."),
    same_face: float = typer.Option(0.2, "--same-face", min=0.0, max=1.0, help="Share of steps' faces whose identity source is the face itself (L_rec applies)."),
    synthetic_identity: float = typer.Option(0.0, "--synthetic-identity", min=0.0, max=1.0, help="Share of the swapped faces given an identity no face has "
                                             "(half uniform unit vectors, half the face's own turned by an idrotate angle); not in the book, 0 = the book's swaps only."),
    margin: float = MARGIN,
    resolution: int = typer.Option(128, "--resolution", help="Crop side (a power of two)."),
    width_scale: float = typer.Option(1.0, "--width-scale", min=0.125, help="Multiply every generator and encoder width (1: the committed model's)."),
    generator_channels: Optional[str] = typer.Option(None, "--generator-channels", help="Output widths of the AAD ResBlks at 2, 4, ..., res/2 px, "
                                                     "comma-separated (default at 128 px: 128,128,128,64,32,16); overrides --width-scale for the generator."),
    encoder_channels: Optional[int] = typer.Option(None, "--encoder-channels", min=1, help="Attribute encoder width at res/2 px, doubling per level "
                                                   "(default 8); overrides --width-scale for the encoder."),
    max_encoder_channels: Optional[int] = typer.Option(None, "--max-encoder-channels", min=1, help="The attribute encoder's widest level (default 64)."),
    full_res_channels: int = typer.Option(0, "--full-res-channels", min=0, help="Channels of a full-resolution 3x3 convolution of the input joined to "
                                          "the finest attribute map (not in the book; 0: the finest map is the res/2 map upsampled, as in FaceShifter)."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="In a work folder without a checkpoint, start from this earlier export: its weights "
                                             "(grown into wider --generator-channels or a --full-res-channels branch without changing its output), its identity "
                                             "whitening, step count and training time, and its discriminator when it holds one of this shape (else a fresh one: see "
                                             "--discriminator-warmup); Adam's moments start afresh."),
    discriminator_warmup: int = typer.Option(0, "--discriminator-warmup", min=0, help="Before the generator's first step in this work folder, train "
                                             "the discriminator alone for this many steps against the generator as it is (not in the book; for --init-from "
                                             "an export without a discriminator, which a fresh one otherwise overpowers within a few hundred steps)."),
    ema_decay: float = typer.Option(0.0, "--ema-decay", min=0.0, max=0.99999, help="Evaluate and export a moving average of the generator's "
                                    "weights with this decay (e.g. 0.999: about the last thousand steps) instead of its last step, as StyleGAN's "
                                    "generator is (not in the book; 0: the last step). A folder checkpointed without it starts the average at its step."),
    component_weight: float = typer.Option(0.0, "--component-weight", min=0.0, help="Weigh the eyes and the mouth 1 + this in L_rec and the "
                                           "perceptual term (Gaussian bumps on the crop's template points; not in the book: GFPGAN's "
                                           "facial-component idea, where this generator's eyes and mouths come out smeared; 0: every pixel alike)."),
    export_half: bool = typer.Option(False, "--export-half/--export-float32", help="Store the exported weights as float16 (half the file; computed in float32 when loaded)."),
    checkpoint_every: int = CHECKPOINT_EVERY,
    evaluate_every: int = EVALUATE_EVERY,
    threads: int = THREADS,
    device: str = DEVICE,
    seed: int = SEED,
    export: Optional[Path] = typer.Option(None, "--export", help="When done (or interrupted), write the weights here as safetensors, and its model card (.md) beside it."),
    card_note: list[str] = CARD_NOTE,
    progress: bool = PROGRESS,
):
    """Train the disentangling generator of IdentityDP and idrotate (book ch. 5, Table 8.3): U-Net attribute
    encoder, AAD ResBlocks, multi-scale discriminator, L_adv + 10 L_att + 5 L_id + 10 L_rec."""
    _check_folders(data)
    from .models.aei import AEIConfig
    from .train.aei import AEITrainer, AEITrainSettings
    from .train.face_crops import prepare
    from .weights import WeightsMissing

    base = AEIConfig.for_resolution(resolution)
    config = {"resolution": resolution}
    if base.generator_channels != AEIConfig().generator_channels:
        config["generator_channels"] = list(base.generator_channels)
    if width_scale != 1.0:
        config.update(base_channels=max(1, round(base.base_channels * width_scale)),
                      max_channels=max(1, round(base.max_channels * width_scale)),
                      generator_channels=[max(1, round(c * width_scale)) for c in base.generator_channels])
    if generator_channels is not None:
        try:
            config["generator_channels"] = [int(c) for c in generator_channels.split(",")]
        except ValueError:
            _fail(f"--generator-channels must be comma-separated integers, got {generator_channels!r}")
    if encoder_channels is not None:
        config["base_channels"] = encoder_channels
    if max_encoder_channels is not None:
        config["max_channels"] = max_encoder_channels
    if full_res_channels:
        config["full_res_channels"] = full_res_channels
    settings = AEITrainSettings(steps=steps, batch_size=batch_size, lr=lr, beta1=beta1, beta2=beta2, lambda_adv=lambda_adv,
                                lambda_att=lambda_att, lambda_id=lambda_id, lambda_rec=lambda_rec, lambda_perceptual=lambda_perceptual, same_face=same_face, synthetic_identity=synthetic_identity,
                                identity_on_composite=identity_on_composite,
                                margin=margin, checkpoint_every=checkpoint_every, evaluate_every=evaluate_every,
                                threads=threads, seed=seed, config=config, device=_device(device),
                                init_from=str(init_from) if init_from else "", discriminator_warmup=discriminator_warmup,
                                ema_decay=ema_decay, component_weight=component_weight)
    try:
        AEIConfig.from_dict({**base.to_dict(), **config}).check()
        crops = prepare(list(data), work / "data", resolution, margin, progress)
        trainer = AEITrainer(crops, settings, work, log=lambda m: console.print(m, markup=False))
    except WeightsMissing as e:
        _fail(str(e), code=3)
    except ValueError as e:
        _fail(str(e))
    result = _train_and_measure(trainer, steps, progress, 256, exporting=export is not None)
    if export is not None:
        from .train.model_card import write_aei_model_card

        _export_with_card(trainer, "aei", data, result, card_note, export, write_aei_model_card, half=export_half)


def _train_and_measure(trainer, steps: int, progress: bool, held_out_faces: int, exporting: bool) -> dict:
    console.print(f"{len(trainer.train_idx)} training faces, {len(trainer.eval_idx)} held out; step {trainer.step} of {steps}")
    trainer.run(progress)
    if trainer.step < steps and not exporting:   # interrupted: the checkpoint is written, measuring would only delay the exit
        console.print(f"stopped at step {trainer.step} of {steps}; the same command resumes from the checkpoint")
        return {}
    result = trainer.evaluate(held_out_faces)
    console.print("held-out: " + json.dumps(result), markup=False)
    return result


def _card(trainer, command: str, data: list[Path], result: dict, notes: list[str]) -> dict:
    """What a model card states of a training run: data, network, faces, machine, command, notes."""
    import shlex
    import sys

    return {"data": [d.name for d in data], "held_out_eval": result, "config": trainer.config.to_dict(),
            "train_faces": int(len(trainer.train_idx)), "held_out_faces": int(len(trainer.eval_idx)),
            "machine": _machine(trainer),
            "command": shlex.join(["anoncli", "train", command, *_without_card_notes(sys.argv[3:])]), "notes": list(notes)}


def _machine(trainer) -> str:
    import os

    import torch

    device = getattr(trainer, "device", None)
    if device is not None and device.type == "cuda":
        return f"one {torch.cuda.get_device_name(device)} GPU ({os.cpu_count()} CPU cores), torch {torch.__version__}"
    return f"{os.cpu_count()} CPU cores, torch {torch.__version__}"


def _without_card_notes(args: list[str]) -> list[str]:
    """The command's arguments less its --card-note paragraphs, which the card prints as notes."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--card-note":
            skip = True
        elif not arg.startswith("--card-note="):
            kept.append(arg)
    return kept


def _card_after_export(card: dict, trainer) -> dict:
    import dataclasses

    return {**card, "steps": trainer.step, "train_seconds": trainer.elapsed, "settings": dataclasses.asdict(trainer.settings),
            "history": getattr(trainer, "history", []), **getattr(trainer, "card_extras", {})}


def _export_with_card(trainer, command: str, data: list[Path], result: dict, notes: list[str], export: Path, write_card,
                      **export_options) -> None:
    """Write the trained network to ``export`` and its model card beside it."""
    card = _card(trainer, command, data, result, notes)
    trainer.export(export, card, **export_options)
    card_path = write_card(export, _card_after_export(card, trainer))
    console.print(f"[green]exported[/] {escape(str(export))} and its model card {escape(str(card_path))}")


@train_app.command("glow")
def train_glow(
    data: list[Path] = DATA,
    work: Path = WORK,
    steps: int = typer.Option(100000, "--steps", min=1, help="Train until this many steps in total."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Faces per step (FFEM: 16)."),
    lr: float = typer.Option(1e-3, "--lr", min=0.0, help="Adam learning rate after warm-up (FFEM: 1e-3)."),
    warmup_steps: int = typer.Option(500, "--warmup-steps", min=0, help="Steps of linear learning-rate warm-up."),
    resolution: int = typer.Option(128, "--resolution", help="Face side in pixels (FFEM: 128); the aligned 128 px crops are area-resized."),
    levels: int = typer.Option(5, "--levels", min=1, help="Multi-scale levels L (FFEM: 5)."),
    flow_steps: int = typer.Option(32, "--flow-steps", min=1, help="Flow steps K per level (FFEM: 32)."),
    hidden: int = typer.Option(512, "--hidden", min=1, help="Channels of each coupling network (Glow: 512)."),
    n_bits: int = typer.Option(5, "--n-bits", min=1, max=8, help="Colour depth the likelihood counts (Glow's CelebA-HQ: 5)."),
    margin: float = MARGIN,
    checkpoint_every: int = CHECKPOINT_EVERY,
    evaluate_every: int = EVALUATE_EVERY,
    threads: int = THREADS,
    device: str = DEVICE,
    seed: int = SEED,
    export: Optional[Path] = typer.Option(None, "--export", help="When done (or interrupted), write the weights here as safetensors."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="In a work folder without a checkpoint, start from this earlier "
                                             "export (the same network and margin): its weights, step count and training time; "
                                             "Adam's moments start afresh and the learning rate warms up again."),
    precision: str = typer.Option("float32", "--precision", help="float32, or bfloat16: the coupling networks' convolutions "
                                  "under bfloat16 autocast (the flow's transforms, log-determinants, weights, optimiser and "
                                  "held-out evaluation stay float32; on 2 CPU cores with bfloat16 instructions a step takes "
                                  "0.55 of the time, README)."),
    card_note: list[str] = CARD_NOTE,
    progress: bool = PROGRESS,
):
    """Train Glow, FFEM's flow (seed 001): actnorm, LU 1x1 convolutions, affine couplings, multi-scale
    levels with learned priors, by bits per dimension."""
    _check_folders(data)
    from .train.face_crops import prepare
    from .train.glow import GlowTrainer, GlowTrainSettings

    config = {"resolution": resolution, "levels": levels, "steps": flow_steps, "hidden": hidden, "n_bits": n_bits}
    settings = GlowTrainSettings(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps,
                                 checkpoint_every=checkpoint_every, evaluate_every=evaluate_every, threads=threads,
                                 seed=seed, device=_device(device), margin=margin, config=config,
                                 init_from=str(init_from) if init_from else "", precision=precision)
    try:
        from .models.glow import GlowConfig
        from .train.loop import PRECISIONS

        if precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        GlowConfig(**config).check()
        crops = prepare(list(data), work / "data", 128, settings.margin, progress)
        trainer = GlowTrainer(crops, settings, work, log=lambda m: console.print(m, markup=False))
    except ValueError as e:
        _fail(str(e))
    result = _train_and_measure(trainer, steps, progress, 100, exporting=export is not None)
    if export is not None:
        from .train.glow import sample_grid_path
        from .train.model_card import write_glow_model_card

        grids = {t: sample_grid_path(work, trainer.step, t) for t in (0.5, 1.0)}
        _export_with_card(trainer, "glow", data, result, card_note, export,
                          lambda path, card: write_glow_model_card(path, card, grids))


@train_app.command("student")
def train_student(
    data: list[Path] = DATA,
    work: Path = WORK,
    steps: int = typer.Option(20000, "--steps", min=1, help="Train until this many steps in total (each trains the decoder and the encoder once)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Faces and latent samples per step."),
    lr: float = typer.Option(2e-4, "--lr", min=0.0, help="Adam learning rate of both halves."),
    lambda_percept: float = typer.Option(1.0, "--lambda-percept", min=0.0, help="λ of the decoder's perceptual term (seed 000 Sec. 4)."),
    lambda_samples: float = typer.Option(1.0, "--lambda-samples", min=0.0, help="μ of the decoder's L1 to the teacher's decoded samples D_t(z), z ~ N(0, τ²I) (not in seed 000, whose loss is μ = 0: fake faces are decoded at λ = 0.5, where real faces' latents never are)."),
    gamma: float = typer.Option(1.0, "--gamma", min=1e-6, help="γ of the encoder loss ‖γz − E_s(D_t(z))‖² (seed 000 Sec. 4)."),
    temperature_min: float = typer.Option(0.4, "--temperature-min", min=0.0, help="Smallest τ of the encoder's latent samples z ~ N(0, τ²I)."),
    temperature_max: float = typer.Option(1.0, "--temperature-max", min=0.0, help="Largest τ of those samples (the teacher's prior: 1)."),
    widths: list[int] = typer.Option([], "--width", min=1, help="Student feature channels per level, repeated once per teacher level (default 32, 48, 64, ...)."),
    teacher: str = typer.Option("glow-celeba-utk-64", "--teacher", help="Registry name of the Glow teacher (`anoncli weights list`)."),
    checkpoint_every: int = CHECKPOINT_EVERY,
    evaluate_every: int = EVALUATE_EVERY,
    threads: int = THREADS,
    device: str = DEVICE,
    seed: int = SEED,
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Look for the teacher's file here first."),
    export: Optional[Path] = typer.Option(None, "--export", help="When done (or interrupted), write the student here as safetensors."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="In a work folder without a checkpoint, start from this earlier export (weights, step count and training time; Adam's moments start afresh)."),
    card_note: list[str] = CARD_NOTE,
    progress: bool = PROGRESS,
):
    """Distil the flow into a tiny CNN encoder and decoder (seed 000, MCKD): the decoder on real faces
    through the teacher's encoder, the encoder on the teacher's decoded samples."""
    _check_folders(data)
    if temperature_min > temperature_max:
        _fail("--temperature-min is above --temperature-max")
    from .flow.model import FlowModel
    from .train.face_crops import prepare
    from .train.flow_student import StudentTrainer, StudentTrainSettings
    from .weights import WeightsMissing

    try:
        flow = FlowModel(weights_dir, teacher)
    except (KeyError, WeightsMissing, ValueError) as e:
        _fail(str(e).strip("'\""))
    settings = StudentTrainSettings(steps=steps, batch_size=batch_size, lr=lr, lambda_percept=lambda_percept, lambda_samples=lambda_samples, gamma=gamma,
                                    temperature_min=temperature_min, temperature_max=temperature_max,
                                    checkpoint_every=checkpoint_every, evaluate_every=evaluate_every, threads=threads,
                                    seed=seed, device=_device(device), teacher_sha256=flow.sha256, widths=list(widths),
                                    init_from=str(init_from) if init_from else "")
    try:
        crops = prepare(list(data), work / "data", 128, flow.margin, progress)
        trainer = StudentTrainer(crops, flow.net, settings, work, flow.margin, log=lambda m: console.print(m, markup=False))
    except ValueError as e:
        _fail(str(e))
    result = _train_and_measure(trainer, steps, progress, 100, exporting=export is not None)
    if export is not None:
        from .train.model_card import write_student_model_card

        _export_with_card(trainer, "student", data, result, card_note, export, write_student_model_card)


@train_app.command("diffae")
def train_diffae(
    data: list[Path] = DATA,
    work: Path = WORK,
    steps: int = typer.Option(100000, "--steps", min=1, help="Train until this many steps in total."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Faces per step."),
    lr: float = typer.Option(1e-4, "--lr", min=0.0, help="Adam learning rate (the official DiffAE autoencoders: 1e-4)."),
    ema_decay: float = typer.Option(0.999, "--ema-decay", min=0.0, max=1.0, help="Decay of the weights' moving average that is evaluated and exported "
                                    "(official: 0.9999 over millions of faces; 0.999 suits a CPU run of thousands of steps)."),
    resolution: int = typer.Option(64, "--resolution", help="Face side in pixels; the aligned 128 px crops are area-resized."),
    width: int = typer.Option(0, "--width", min=0, help="Base channels of the UNet and the semantic encoder (0: the committed network's)."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="In a work folder without a checkpoint, start from this earlier "
                                             "export (same network): its weights, step count and training time; Adam's moments start afresh."),
    evaluation_ddim_steps: int = typer.Option(20, "--evaluation-ddim-steps", min=1, help="DDIM steps of the held-out reconstruction in the log."),
    loss_weighting: str = typer.Option("simple", "--loss-weighting", help="simple: L_simple, as the official autoencoders train; "
                                       "truncated-snr (not in the thesis): each face's loss times max(1, 1/SNR_t), i.e. the larger "
                                       "of the noise and the image errors, which forces the decoder to read z̄ at large t."),
    prior_faces: int = typer.Option(2048, "--prior-faces", min=2, help="Training faces whose z̄ the exported code prior (the "
                                    "Gaussian `--method diffusion` draws its fakes from) is fitted to."),
    prior_shrinkage: float = typer.Option(0.01, "--prior-shrinkage", min=0.0, max=1.0, help="Share by which that prior's "
                                          "covariance is pulled toward its diagonal's mean (keeps it positive definite)."),
    precision: str = typer.Option("float32", "--precision", help="float32, or bfloat16: the forward pass under bfloat16 autocast "
                                  "(weights, optimiser and moving average stay float32; for GPUs, where it is faster)."),
    margin: float = MARGIN,
    checkpoint_every: int = CHECKPOINT_EVERY,
    evaluate_every: int = EVALUATE_EVERY,
    threads: int = THREADS,
    device: str = DEVICE,
    seed: int = SEED,
    export: Optional[Path] = typer.Option(None, "--export", help="When done (or interrupted), write the EMA network here as fp16 safetensors."),
    export_half: bool = typer.Option(True, "--export-half/--export-float", help="fp16 or float32 export."),
    card_note: list[str] = CARD_NOTE,
    progress: bool = PROGRESS,
):
    """Train the diffusion autoencoder of `--method diffusion` (thesis §6.4; Preechakul et al. 2022): a
    semantic encoder to a 512-d code and a conditional DDIM UNet, on DDPM's noise-prediction loss."""
    _check_folders(data)
    from .train.diffae import DiffAETrainer, DiffAETrainSettings, network_config
    from .train.face_crops import prepare

    config = {"image_size": resolution}
    if width % 32:
        _fail(f"--width must be a multiple of 32 (the network's GroupNorm takes 32 groups), got {width}")
    if width:
        config["model_channels"] = width
    settings = DiffAETrainSettings(steps=steps, batch_size=batch_size, lr=lr, ema_decay=ema_decay,
                                   evaluation_ddim_steps=evaluation_ddim_steps, checkpoint_every=checkpoint_every,
                                   evaluate_every=evaluate_every, threads=threads, seed=seed, device=_device(device),
                                   margin=margin, config=config, init_from=str(init_from) if init_from else "",
                                   loss_weighting=loss_weighting, precision=precision, prior_faces=prior_faces,
                                   prior_shrinkage=prior_shrinkage)
    try:
        from .diffusion.ddim import DEFAULT_TRAINING_STEPS, LOSS_WEIGHTINGS, ddim_timesteps
        from .train.loop import PRECISIONS

        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"--loss-weighting must be one of {', '.join(LOSS_WEIGHTINGS)}, got {loss_weighting!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")

        ddim_timesteps(DEFAULT_TRAINING_STEPS, evaluation_ddim_steps)
        network_config(config)   # refuses shapes the network cannot take
        crops = prepare(list(data), work / "data", 128, margin, progress)
        trainer = DiffAETrainer(crops, settings, work, log=lambda m: console.print(m, markup=False))
    except ValueError as e:
        _fail(str(e))
    result = _train_and_measure(trainer, steps, progress, 64, exporting=export is not None)
    if export is not None:
        from .train.model_card import write_diffae_model_card

        _export_with_card(trainer, "diffae", data, result, card_note, export, write_diffae_model_card, half=export_half)


@train_app.command("attributes")
def train_attributes(
    data: list[Path] = DATA,
    work: Path = WORK,
    steps: int = typer.Option(4000, "--steps", min=1, help="Train until this many steps in total."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Faces per step."),
    lr: float = typer.Option(1e-3, "--lr", min=0.0, help="AdamW learning rate."),
    weight_decay: float = typer.Option(1e-4, "--weight-decay", min=0.0, help="AdamW weight decay."),
    resolution: int = typer.Option(64, "--resolution", help="Face side in pixels (a multiple of 16); the aligned 128 px crops are area-resized."),
    margin: float = MARGIN,
    checkpoint_every: int = CHECKPOINT_EVERY,
    evaluate_every: int = EVALUATE_EVERY,
    threads: int = THREADS,
    device: str = DEVICE,
    seed: int = SEED,
    export: Optional[Path] = typer.Option(None, "--export", help="When done (or interrupted), write the network here as fp16 safetensors, and its model card (.md) beside it."),
    card_note: list[str] = CARD_NOTE,
    progress: bool = PROGRESS,
):
    """Train the CelebA attribute classifier of `--method diffusion`'s pairing and attribute measure (thesis
    §6.5-6.6; FaRL's ViT there): 40 binary attributes, binary cross-entropy, on the faces with labels.csv attributes."""
    _check_folders(data)
    from .train.attributes import AttributeTrainer, AttributeTrainSettings, attribute_labels
    from .train.face_crops import prepare

    settings = AttributeTrainSettings(steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay, resolution=resolution,
                                      margin=margin, checkpoint_every=checkpoint_every, evaluate_every=evaluate_every,
                                      threads=threads, seed=seed, device=_device(device))
    try:
        from .models.attributes import AttributeNetConfig

        AttributeNetConfig(resolution=resolution)
        crops = prepare(list(data), work / "data", 128, margin, progress)
        trainer = AttributeTrainer(crops, attribute_labels(crops.index, list(data)), settings, work,
                                   log=lambda m: console.print(m, markup=False))
    except ValueError as e:
        _fail(str(e))
    result = _train_and_measure(trainer, steps, progress, 1_000_000, exporting=export is not None)
    if export is not None:
        from .train.model_card import write_attributes_model_card

        _export_with_card(trainer, "attributes", data, result, card_note, export, write_attributes_model_card)

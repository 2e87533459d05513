"""Command-line interface: parses, validates, prints. No logic of its own; heavy modules load lazily."""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from .cli_train import train_app

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

app = typer.Typer(
    name="anoncli",
    help="Batch face anonymization for face datasets: detect, align, de-identify, blend; "
         "with a manifest of what was done and resumable runs.",
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode="rich",
)
weights_app = typer.Typer(help="The registry of pretrained files: list, verify, fetch, import.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")
app.add_typer(train_app, name="train")


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def _version(value: bool):
    if value:
        out.print(f"anoncli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit.")):
    pass


def _method_epilog() -> str:
    from .methods import available_methods

    lines = ["[bold]Method flags[/] (after --method NAME; `anoncli methods` explains each):\n"]
    for spec in available_methods():
        flags = ", ".join(f"{p.flag} ({p.default})" for p in spec.params)
        lines.append(f"  [cyan]{spec.name}[/]: {flags}\n")
    return "\n".join(lines)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog=_method_epilog(),
)
def anonymize(
    ctx: typer.Context,
    input_dir: Path = typer.Argument(..., help="Folder of images, searched recursively (jpg, jpeg, png, webp, bmp, tif)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output folder; mirrors the input tree. Default: a sibling INPUT-anon."),
    method: str = typer.Option("blur", "--method", "-m", help="Anonymization method; see `anoncli methods`."),
    detector: str = typer.Option("retinaface-onnx", "--detector", help="Face detector: retinaface-onnx (bundled, offline) or retinaface-facexlib (needs `anoncli weights`)."),
    threshold: float = typer.Option(0.3, "--thresh", "--threshold", min=0.0, max=1.0, help="Detection score threshold; lower finds more faces (and more false ones). Recall first: a missed face is a privacy leak."),
    detect_size: int = typer.Option(640, "--detect-size", min=0, help="Longer image side the detector sees, in pixels (images are never enlarged; 0 = full size)."),
    min_face: float = typer.Option(0.0, "--min-face", min=0.0, help="Ignore detections whose shorter box side is below this many pixels (they are listed in the manifest notes)."),
    confirm_below: float = typer.Option(0.0, "--confirm-below", min=0.0, max=1.0, help="Second look at uncertain large detections: those scoring below this and at least --confirm-min-side pixels are detected again on their region alone, scaled so the box is 160 px wide, and left untouched (listed in the manifest notes) when not found again at --thresh. On 14,193 photos it dropped 6 detections, none of them a face, but blurred and turned real faces can fail it too (README), so it is off by default (0): recall first. 0.5 is the setting measured."),
    confirm_min_side: float = typer.Option(96.0, "--confirm-min-side", min=0.0, help="With --confirm-below: the shorter box side, in pixels, from which an uncertain detection gets the second look; smaller ones, where blurred and distant real faces are, are always kept."),
    no_face: str = typer.Option("keep", "--no-face", help="Images with no face: keep (write with metadata stripped), skip (write nothing), fail (count as an error)."),
    keep_metadata: bool = typer.Option(False, "--keep-metadata", help="Keep colour profiles and non-identifying EXIF; GPS, maker notes, serials and the thumbnail are always removed."),
    max_pixels: int = typer.Option(178_956_970, "--max-pixels", min=1, help="Refuse images with more pixels than this (decompression bombs)."),
    workers: int = typer.Option(0, "--workers", "-j", min=0, help="Worker processes; 0 = one per CPU core."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images per detector batch (and per unit of work; a method that searches several faces at once, "
                                    "as fsap, gets units of up to four of its batches, as many per worker)."),
    executor: str = typer.Option("local", "--executor", help="Where the work runs: local (this machine's processes) or ray (Ray Data: one actor per --workers, on a local Ray cluster or the one at --ray-address; needs `pip install 'anoncli\\[ray]'`). The outputs are the same."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="With --executor ray: the cluster to run on (e.g. 10.0.0.5:6379 or ray://head:10001; default $RAY_ADDRESS, else a local cluster started for the run). Its nodes need anoncli installed and the input and output folders on shared storage."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier run with a different configuration in the same output folder."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Look for weight files here first."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object on stdout (counts, failures, output files, keyfile sizes; never key material) instead of text; implies no progress bar."),
    keyfile: Optional[Path] = typer.Option(None, "--keyfile", help="Write the run's keys to this file (encrypted, mode 0600, kept outside the input and output folders). Required by reversible methods; `anoncli restore` reads it."),
    escrow: bool = typer.Option(False, "--escrow", help="Also keep every face's original pixels, losslessly compressed and encrypted, in the keyfile: any method, blur included, becomes exactly restorable by its holder (tens of KiB per face: 45-78 KiB measured on UTKFace and CelebA)."),
    recipient: Optional[Path] = typer.Option(None, "--recipient", help="Encrypt the keyfile for this public key (from `anoncli keygen`) instead of a passphrase: this machine then cannot restore anything itself."),
    passphrase_file: Optional[Path] = typer.Option(None, "--passphrase-file", help="Read the keyfile passphrase from this file (its content, less a trailing newline). Otherwise $ANONCLI_PASSPHRASE, otherwise a prompt. Never given as a flag value."),
    kdf_memory: int = typer.Option(64, "--kdf-memory", min=1, max=4096, help="Argon2id memory for a new passphrase keyfile, MiB (RFC 9106 §4: 64)."),
    kdf_iterations: int = typer.Option(3, "--kdf-iterations", min=1, max=64, help="Argon2id passes for a new passphrase keyfile (RFC 9106 §4: 3)."),
    kdf_lanes: int = typer.Option(4, "--kdf-lanes", min=1, max=64, help="Argon2id lanes (parallelism) for a new passphrase keyfile (RFC 9106 §4: 4)."),
):
    """Anonymize every face in a folder of images.

    Re-running the same command resumes an interrupted run; the output folder gets the
    anonymized images, manifest.csv (one row per input) and run.json (the run record).
    With --keyfile the run also writes an encrypted keyfile from which `anoncli restore`
    gives back the originals (reversible methods, or any method with --escrow).
    """
    from .config import NO_FACE_POLICIES, RunConfig
    from .executors import list_executors
    from .faces.detectors import DETECTORS
    from .method_flags import method_flag_values
    from .methods import available_methods, get_method_spec
    from .keys.format import KeyfileError
    from .run import RunError, default_output, run_anonymize
    from .weights import WeightsMissing, locate, missing_message, REGISTRY

    if no_face not in NO_FACE_POLICIES:
        fail(f"--no-face must be one of {', '.join(NO_FACE_POLICIES)}")
    if executor not in list_executors():
        fail(f"unknown --executor {executor!r}; available: {', '.join(list_executors())}")
    if executor == "ray":
        from .executors.ray_data import ray_missing_message

        if ray_missing_message():
            fail(ray_missing_message())
    if ray_address and executor != "ray":
        fail("--ray-address needs --executor ray")
    if escrow and executor == "ray":
        fail("--escrow is not available with --executor ray: the escrowed original faces would pass through "
             "Ray's object store, which may spill them to disk; use --executor local")
    if detector not in DETECTORS:
        fail(f"unknown detector {detector!r}; available: {', '.join(DETECTORS)}")
    try:
        spec = get_method_spec(method)
        general_options = [o for p in ctx.command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")]
        flags = method_flag_values(list(ctx.args), spec, [*general_options, "--help"], available_methods())
        params = spec.resolve_params(flags)
    except (KeyError, ValueError) as e:
        fail(str(e.args[0]) if e.args else str(e))
    for name in (DETECTORS[detector].weights, *spec.weights_needed(params)):
        found, bad = locate(name, weights_dir)
        if found is None:
            fail(missing_message(REGISTRY[name], bad), code=3)
    warning = spec.advisory(weights_dir, params) if spec.advisory else None
    if warning:
        console.print(f"[bold yellow]warning:[/] {escape(warning)}")
    keys = _key_options(spec, keyfile, escrow, recipient, passphrase_file, kdf_memory, kdf_iterations, kdf_lanes)
    if keys is not None and spec.reversible and not escrow:
        from .methods.base import RestoreKind

        capability = spec.restore_capability(params, escrow=False)
        if capability.kind is RestoreKind.IMPOSSIBLE:
            console.print(f"[yellow]note:[/] {escape(capability.refusal(spec.name))}; `anoncli restore` will refuse it.")
    config = RunConfig(method=spec.name, params=params, detector=detector,
                       detector_weights_sha256=REGISTRY[DETECTORS[detector].weights].sha256,
                       threshold=threshold, detect_size=detect_size, min_face=min_face, confirm_below=confirm_below,
                       confirm_min_side=confirm_min_side, no_face=no_face,
                       keep_metadata=keep_metadata, max_pixels=max_pixels)
    output = output or default_output(input_dir)
    n_workers = workers or (os.cpu_count() or 1)
    try:
        summary = run_anonymize(input_dir, output, config, workers=n_workers, batch_size=batch_size,
                                overwrite=overwrite, weights_dir=str(weights_dir) if weights_dir else None,
                                progress=not (quiet or as_json), log=lambda m: console.print(m, markup=False), keys=keys,
                                executor=executor, ray_address=ray_address)
    except RunError as e:
        fail(str(e))
    except WeightsMissing as e:
        fail(str(e), code=3)
    except KeyfileError as e:
        fail(str(e), code=e.exit_code)
    if as_json:
        print(json.dumps(_summary_json(summary), indent=2))
    else:
        _print_summary(summary)
    raise typer.Exit(summary.exit_code)


def _summary_json(s) -> dict:
    """`anonymize --json`: what the text summary says, keyed for scripts."""
    c = s.counts
    written = s.manifest_written
    return {"output": str(s.output), "images": sum(c.get(k, 0) for k in ("ok", "no_face", "error", "not_done")),
            "counts": c, "faces": s.faces, "left_untouched": s.left_untouched, "resumed": s.resumed,
            "seconds": round(s.seconds, 3),
            "stopped": s.stopped, "failed": [{"input": rel, "reason": reason} for rel, reason in s.failed],
            "skipped_folders": [str(d) for d in s.skipped_dirs],
            "manifest": str(s.output / "manifest.csv") if written else None,
            "manifest_parquet": str(s.output / "manifest.parquet") if written else None,
            "run_json": str(s.output / "run.json") if written else None,
            "keyfile": s.keyfile, "exit_code": s.exit_code}


def _key_options(spec, keyfile, escrow, recipient, passphrase_file, kdf_memory, kdf_iterations, kdf_lanes):
    """The run's KeyOptions (None without --keyfile), with every inconsistency refused up front."""
    if keyfile is None:
        for flag, given in (("--escrow", escrow), ("--recipient", recipient), ("--passphrase-file", passphrase_file)):
            if given:
                fail(f"{flag} needs --keyfile PATH (where the keys are written)")
        if spec.reversible:
            fail(f"method {spec.name} is reversible: it needs --keyfile PATH to keep the keys that undo it")
        return None
    if recipient is not None and passphrase_file is not None:
        fail("give either --recipient (public-key keyfile) or a passphrase, not both")
    if kdf_memory * 1024 < 8 * kdf_lanes:
        fail("--kdf-memory must be at least 8 KiB per lane")
    from .keys.envelope import Argon2Params
    from .keys.keyfile import partial_path
    from .keys.keypair import KeyMaterialError, read_public_key
    from .keys.passphrase import PassphraseUnavailable, obtain_passphrase
    from .keys.protect import Passphrase, Recipient
    from .run import KeyOptions

    if not spec.reversible and not escrow:
        console.print(f"[yellow]note:[/] {spec.name} cannot be undone from its output; without --escrow the keyfile "
                      "only records face ids and parameters, and `anoncli restore` will have nothing to restore.")
    try:
        if recipient is not None:
            protector = Recipient(read_public_key(recipient))
        else:
            new = not (keyfile.exists() or partial_path(keyfile).exists())
            secret = obtain_passphrase(passphrase_file, confirm=new)
            protector = Passphrase(secret, Argon2Params.new(kdf_memory * 1024, kdf_iterations, kdf_lanes))
    except (KeyMaterialError, PassphraseUnavailable) as e:
        fail(str(e))
    return KeyOptions(keyfile, protector, escrow)


def _print_summary(s) -> None:
    c = s.counts
    not_done = c.get("not_done", 0)
    total = c["ok"] + c["no_face"] + c["error"] + not_done
    out.print(f"[bold]{total}[/] images: [green]{c['ok']} anonymized[/] ({s.faces} faces), "
              f"[yellow]{c['no_face']} with no face found[/], [red]{c['error']} failed[/]"
              + (f", [red]{not_done} not done yet[/]" if not_done else "")
              + (f", {s.resumed} already done earlier" if s.resumed else "")
              + f" in {s.seconds:.1f}s")
    if c["no_face"]:
        out.print("[yellow]note:[/] images with no face found are listed in the manifest (status no_face); check them by eye.")
    if s.left_untouched:
        out.print(f"[yellow]note:[/] {s.left_untouched} uncertain detection(s) not found again by the second look "
                  "(--confirm-below) were left untouched; the manifest's notes give their boxes.")
    for rel, reason in s.failed[:20]:
        out.print(f"  [red]failed[/] {escape(rel)}: {escape(reason)}")
    if len(s.failed) > 20:
        out.print(f"  ... and {len(s.failed) - 20} more (see manifest.csv)")
    for d in s.skipped_dirs:
        out.print(f"  [yellow]skipped folder[/] {escape(str(d))}")
    if s.stopped:
        out.print(f"[bold red]stopped:[/] {escape(str(s.stopped))}")
    out.print(f"output: {s.output}  " + ("(manifest.csv, manifest.parquet, run.json)" if s.manifest_written else "(no manifest.csv written yet)"))
    if s.keyfile:
        k = s.keyfile
        per_face = f"{k['bytes_per_face'] / 1024:.1f} KiB per face" if k["escrow"] else f"{k['bytes_per_face']:.0f} bytes per face"
        out.print(f"keyfile: {k['path']}  ({k['bytes'] / 1024:.1f} KiB; {k['records']} images, {k['faces']} faces, "
                  f"{per_face}{', with escrow' if k['escrow'] else ''})")


@app.command()
def restore(
    anon_dir: Path = typer.Argument(..., help="The output folder of `anoncli anonymize` (with its manifest.csv and run.json)."),
    keyfile: Path = typer.Option(..., "--keyfile", help="The run's keyfile."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="New folder for the restored images and their manifest; must not exist. Default: a sibling ANON_DIR-restored."),
    passphrase_file: Optional[Path] = typer.Option(None, "--passphrase-file", help="Read the passphrase (of the keyfile, or of --private-key) from this file; otherwise $ANONCLI_PASSPHRASE, otherwise a prompt."),
    private_key: Optional[Path] = typer.Option(None, "--private-key", help="Private key file (from `anoncli keygen`) for a keyfile written with --recipient."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Look for weight files here first (model-based restore)."),
    workers: int = typer.Option(0, "--workers", "-j", min=0, help="Worker processes; 0 = one per CPU core (each model-based worker loads the method's network)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object on stdout (counts per status, problems, output) instead of text; implies no progress bar."),
):
    """Restore the original images from an anonymized folder and its keyfile.

    Checks first that the keyfile is intact and opens, and that it belongs to this folder's
    run and manifest; then restores each image whose file is unchanged (from escrow, or with
    the reversible method's inverse), reports modified or missing ones, and writes the
    restored tree with its own manifest.csv and restore.json. A run that nothing it kept can
    restore (no escrow, and a method that cannot be undone without it or without flags it was not
    given, such as flowrot without --output-latent) is refused before anything is written. A lossy
    inverse (flowrot --model student, idrotate) writes its images as "approximate", each with its
    measured round trip. Exit status: 0 every image restored (exactly or, for such a method,
    approximately), 1 some images not restored, 2 bad arguments, 3 weights missing, 4 wrong
    passphrase or key, 5 keyfile damaged or tampered, 6 keyfile of another run, 7 the run cannot
    be restored (the line names the anonymize flags that would have made it restorable).
    """
    from .keys.format import KeyfileDamaged, KeyfileError
    from .keys.keyfile import read_header
    from .keys.keypair import KeyMaterialError, private_key_is_protected, read_private_key
    from .keys.passphrase import PassphraseUnavailable, obtain_passphrase
    from .keys.protect import Passphrase, PrivateKey
    from .restore import RestoreRefused, check_restorable, run_restore
    from .run import RunError
    from .weights import WeightsMissing

    try:
        check_restorable(anon_dir)   # before a passphrase is asked for
    except RestoreRefused as e:
        fail(str(e), code=e.exit_code)
    try:
        header = read_header(keyfile)
    except OSError as e:
        fail(f"cannot read keyfile {keyfile}: {e.strerror or e}")
    except KeyfileError as e:
        fail(f"keyfile {keyfile}: {e}", code=e.exit_code)
    try:
        if header.get("protection") == "recipient":
            if private_key is None:
                fail(f"this keyfile was written for public key {header.get('recipient')}; give its --private-key")
            secret = obtain_passphrase(passphrase_file, confirm=False, what="private key") \
                if private_key_is_protected(private_key) else None
            unlocker = PrivateKey(read_private_key(private_key, secret))
        else:
            unlocker = Passphrase(obtain_passphrase(passphrase_file, confirm=False))
        summary = run_restore(anon_dir, keyfile, unlocker, output, weights_dir=str(weights_dir) if weights_dir else None,
                              progress=not (quiet or as_json), workers=workers or (os.cpu_count() or 1))
    except RestoreRefused as e:
        fail(str(e), code=e.exit_code)
    except (KeyMaterialError, PassphraseUnavailable, RunError) as e:
        fail(str(e))
    except KeyfileDamaged as e:
        fail(f"keyfile {keyfile}: {e}", code=e.exit_code)
    except KeyfileError as e:
        fail(str(e), code=e.exit_code)
    except WeightsMissing as e:
        fail(str(e), code=3)
    except KeyboardInterrupt:
        fail("restore interrupted: nothing restored was kept (the partial output folder was removed)", code=130)
    if as_json:
        print(json.dumps({"output": str(summary.output), "counts": summary.counts, "source": summary.source,
                          "seconds": round(summary.seconds, 3),
                          "problems": [{"input": rel, "status": status, "reason": reason} for rel, status, reason in summary.problems],
                          "round_trip_measure": summary.quality_measure, "round_trips": summary.round_trips,
                          "removed_partial": [str(p) for p in summary.removed_partial], "exit_code": summary.exit_code}, indent=2))
        raise typer.Exit(summary.exit_code)
    for folder in summary.removed_partial:
        out.print(f"removed {escape(str(folder))}: the partial output of an earlier restore that was killed")
    c = summary.counts
    approximate = f"[yellow]{c['approximate']} approximate[/] (lossy inverse), " if c["approximate"] else ""
    out.print(f"[green]{c['restored']} restored[/] (from {summary.source}), {approximate}{c['copied']} copied (no face), "
              f"[red]{c['modified']} modified[/], [red]{c['missing']} missing[/], {c['error']} failed, "
              f"{c['not_anonymized']} not anonymized by the run, in {summary.seconds:.1f}s")
    if c["approximate"]:
        spread = (f": median {statistics.median(summary.round_trips):.3g}, worst {min(summary.round_trips):.3g}"
                  if summary.round_trips else "")
        out.print(f"[yellow]note:[/] {escape(summary.capability.reason)}. Round trip per image (manifest.csv column "
                  f"round_trip) is the {escape(summary.quality_measure or 'measured quality')}{spread}.")
    for rel, status, reason in summary.problems[:20]:
        out.print(f"  [red]{status}[/] {escape(rel)}: {escape(reason)}")
    if len(summary.problems) > 20:
        out.print(f"  ... and {len(summary.problems) - 20} more (see manifest.csv)")
    out.print(f"output: {summary.output}  (manifest.csv, restore.json)")
    raise typer.Exit(summary.exit_code)


@app.command()
def report(
    anon_dir: Path = typer.Argument(..., help="The output folder of `anoncli anonymize`."),
    original: Optional[Path] = typer.Option(None, "--original", help="The original images (default: the input folder named in run.json)."),
    restored: Optional[Path] = typer.Option(None, "--restored", help="A folder written by `anoncli restore`: adds recovery measures."),
    wrong_restored: Optional[Path] = typer.Option(None, "--wrong-restored", help="A restore made with a wrong key or password (needs --restored): measured the same way, side by side."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="CSV with an `image` column (file name) and identity / group columns, e.g. CelebA or UTKFace labels.csv."),
    identity_column: str = typer.Option("identity", "--identity-column", help="Column of --labels with the person's identity (identification rank-1/5)."),
    group: list[str] = typer.Option([], "--group", help="Column of --labels to measure fairness over (repeatable), e.g. --group gender --group race."),
    gallery: Optional[Path] = typer.Option(None, "--gallery", help="Folder of photos named in --labels whose main faces join the identification gallery beside the run's originals (FFEM §5: the rest of the dataset as gallery), e.g. the whole dataset the run's images came from. Its embeddings are cached like the others'."),
    evaluator: list[str] = typer.Option(["dlib", "mobilefacenet", "arcface"], "--evaluator", help="Face recognizer used as attacker (repeatable): dlib, mobilefacenet, arcface. One whose weights are missing is listed as unavailable, with the command that gets them; when none can run, the report stops with exit status 2."),
    compare: list[Path] = typer.Option([], "--compare", help="Other anonymized folders of the same originals, shown side by side (repeatable)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Folder for report.json and report.html. Default: a sibling ANON_DIR-report."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Where face embeddings, detections and landmarks are cached by image content hash, so a second report is fast (default: the user cache). The cache holds biometric templates of the originals: keep it private."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the feature cache."),
    workers: int = typer.Option(0, "--workers", "-j", min=0, help="Worker processes (0: one per core, at most 4)."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Look for weight files here first."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable summary (the figures of the terminal table, the paths of report.json and report.html) to stdout instead of the table."),
):
    """Measure how much identity an anonymized run removed and how much utility survived.

    Privacy: protection success rate per recognizer at its literature threshold and at a
    threshold at FAR 1e-3: with identity labels calibrated on pairs of the originals of different
    identities, without them the evaluator's reference threshold (calibrated on labelled photos;
    never on this run's faces); with identity labels,
    rank-1/5 identification (FFEM §5; --gallery enlarges the gallery) and the evaluator's own verification AUC on the originals.
    Utility: detection by another detector (dlib HOG), 68-point landmark distance, SSIM and PSNR
    in and outside the faces. Realism: KID of anonymized against real faces (the other half of the
    run) beside the real-vs-real floor, fine-detail texture inside each face, detection by
    CenterFace; example faces at the photo's resolution. Recovery with --restored (and --wrong-restored); fairness per
    --group. Writes report.json and a self-contained report.html.
    """
    import json

    from .report.build import ReportError, build_report

    out_dir = Path(os.path.abspath(output)) if output else Path(os.path.abspath(anon_dir)).with_name(Path(os.path.abspath(anon_dir)).name + "-report")
    label_table = None
    if labels is not None:
        import pandas as pd

        try:
            label_table = pd.read_csv(labels, dtype=str, keep_default_na=False)
        except (OSError, ValueError) as e:
            fail(f"cannot read --labels {labels}: {e}")
        if "image" not in label_table.columns:
            fail(f"--labels {labels} has no `image` column")
        for col in group:
            if col not in label_table.columns:
                fail(f"--group {col}: no such column in {labels}")
    common = dict(original_dir=original, labels=label_table, identity_column=identity_column if labels else None,
                  group_columns=tuple(group), evaluator_names=tuple(evaluator),
                  weights_dir=str(weights_dir) if weights_dir else None, cache_dir=cache_dir, progress=not quiet,
                  workers=workers or None, use_cache=not no_cache)
    if wrong_restored is not None and restored is None:
        fail("--wrong-restored needs --restored (the correct restore to compare it with)")
    if gallery is not None and labels is None:
        fail("--gallery needs --labels (the identities of the gallery's photos)")
    try:
        result = build_report(anon_dir, restored_dir=restored, wrong_restored_dir=wrong_restored, gallery_dir=gallery, **common)
        rows = [_compare_row(str(anon_dir), result)]
        for other in compare:
            rows.append(_compare_row(str(other), build_report(other, **common)))
    except ReportError as e:
        fail(str(e))
    if compare:
        result["compare"] = rows
    from .io.atomic import write_atomic
    from .io.journal import json_default
    from .report.html import render_html

    write_atomic(out_dir / "report.json", json.dumps(result, indent=1, default=json_default).encode())
    write_atomic(out_dir / "report.html", render_html(result).encode())
    if as_json:
        out.print_json(json.dumps(_report_summary(result, out_dir), default=json_default))
        return
    _print_report(result)
    out.print(f"report: {out_dir / 'report.json'}, {out_dir / 'report.html'}", markup=False, highlight=False)


def _compare_row(label: str, r: dict) -> dict:
    first = next(iter(r["privacy"].values()), {})
    u = r.get("utility") or {}
    return {"label": label, "method": (r.get("run") or {}).get("method"),
            "protection_rate": (first.get("protection_rate") or {}).get("literature"),
            "ssim_face": (u.get("ssim") or {}).get("face"), "psnr_face": (u.get("psnr") or {}).get("face"),
            "detection_rate": (u.get("detection_rate") or {}).get("anonymized")}


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def _realism_summary(r: dict) -> dict | None:
    from .report.realism import summary_dict

    return summary_dict(r)


def _report_summary(r: dict, out_dir: Path) -> dict:
    """The figures `report` prints, keyed for scripts (`report --json`); per-face distances stay in report.json."""
    evaluators = []
    for info in r["evaluators"]:
        p = r["privacy"].get(info["name"])
        evaluators.append({"name": info["name"], "available": p is not None, "reason": info.get("reason"),
                           "white_box": info.get("white_box"), "thresholds": info.get("thresholds"),
                           "threshold_sources": {"literature": info.get("threshold_source"),
                                                 "far_1e-3": info.get("far_threshold")},
                           "verification_auc": (info.get("verification") or {}).get("auc"),
                           **({k: v for k, v in p.items() if k != "distances"} if p is not None else {})})
    return {"report_json": str(out_dir / "report.json"), "report_html": str(out_dir / "report.html"),
            "run": r["run"], "counts": r["counts"], "evaluators": evaluators, "utility": r.get("utility"),
            "realism": _realism_summary(r), "recovery": r.get("recovery"), "fairness": r.get("fairness"), "compare": r.get("compare")}


def _print_report(r: dict) -> None:
    # One column per evaluator and one row per measure: names whole at 80 columns; reasons below the table.
    usable = [info for info in r["evaluators"] if info["name"] in r["privacy"]]
    table = Table(title=f"[bold]{escape(str(r['run'].get('method')))}[/] — {r['counts']['faces']} faces in "
                        f"{r['counts']['images']} images", title_justify="left")
    table.add_column("measure", no_wrap=True)
    for info in usable:
        table.add_column(escape(info["name"]) + ("\n(white-box)" if info["white_box"] else ""), no_wrap=True,
                         min_width=len(info["name"]), justify="right")

    def threshold(info, key):
        t = info["thresholds"][key]
        return "n/a" if t is None else f"{t:.3f}"

    def rank1(info, key):
        ident = r["privacy"][info["name"]].get("identification")
        return "no labels" if not ident else "n/a" if ident.get(key) is None else _pct(ident[key])

    rows = (("threshold, literature", lambda i: threshold(i, "literature")),
            ("protected, literature", lambda i: _pct(r["privacy"][i["name"]]["protection_rate"]["literature"])),
            ("threshold, FAR 1e-3", lambda i: threshold(i, "far_1e-3")),
            ("protected, FAR 1e-3", lambda i: _pct(r["privacy"][i["name"]]["protection_rate"]["far_1e-3"])),
            ("rank-1, anonymized", lambda i: rank1(i, "rank1")),
            ("rank-1, farthest first", lambda i: rank1(i, "rank1_farthest")),
            ("rank-1, originals", lambda i: rank1(i, "baseline_rank1")),
            ("AUC on originals", lambda i: f"{i['verification']['auc']:.3f}" if i.get("verification") else "no labels"))
    if usable:
        for label, cell in rows:
            table.add_row(label, *(cell(info) for info in usable))
        out.print(table)
        if any(info["white_box"] for info in usable):
            from .report.html import WHITE_BOX_NOTE

            out.print(WHITE_BOX_NOTE, markup=False, highlight=False)
        for info in usable:   # which threshold is which, and where each came from
            far = info.get("far_threshold") or {}
            out.print(f"thresholds of {info['name']}: literature: {info.get('threshold_source')}; FAR 1e-3: "
                      f"{far.get('source', 'n/a')}", markup=False, highlight=False)
    for info in r["evaluators"]:
        if info["name"] not in r["privacy"]:
            out.print(f"{info['name']} unavailable: {info['reason']}", markup=False, highlight=False)
    ident = next((p["identification"] for p in r["privacy"].values() if p.get("identification")), None)
    if ident:
        out.print(f"identification: {ident['probes']} probes against a gallery of {ident['gallery']} faces of "
                  f"{ident['identities']} identities; a random ranking scores rank-1 {_pct(ident['chance_rank1'])}. "
                  "\"farthest first\" ranks the gallery from the most distant face, as an attacker who knows that the "
                  "method turns identities away from their owners' would: well above chance, the faces are linkable")
    u = r["utility"]
    det = u.get("detection_rate")
    out.print(f"utility: detection {_pct(det['anonymized']) if det else 'n/a'} (originals {_pct(det['original']) if det else 'n/a'}, "
              f"{det['detector'] if det else ''}); SSIM face {u['ssim']['face'] or float('nan'):.3f}, outside "
              f"{u['ssim']['outside'] or float('nan'):.3f}; PSNR face {u['psnr']['face'] or float('nan'):.1f} dB")
    lm = u.get("landmarks") or {}
    out.print(f"landmarks: {lm['nme_mean']:.3f} of the inter-ocular distance (68 points, n={lm['n']})" if lm.get("available")
              else f"landmarks: unavailable ({escape(str(lm.get('reason')))})")
    from .report.realism import summary_lines

    for line in summary_lines(r):
        out.print(line, markup=False, highlight=False)
    if r.get("recovery"):
        rec = r["recovery"]
        out.print(f"recovery: PSNR {rec['psnr'] if rec['psnr'] is not None else float('inf'):.1f} dB "
                  f"({rec['identical_images']} of {rec['n']} identical), SSIM {rec['ssim'] or 1.0:.4f}, MAE {rec['mae'] or 0.0:.3f}")
        wrong = rec.get("wrong_key")
        if wrong:
            out.print(f"wrong-key restore: PSNR {wrong['psnr'] if wrong['psnr'] is not None else float('inf'):.1f} dB, "
                      f"SSIM {wrong['ssim'] if wrong['ssim'] is not None else float('nan'):.4f}, "
                      f"identity distance " + ", ".join(f"{k} {v:.3f}" for k, v in wrong["identity_distance"].items()))
    for column, f in (r.get("fairness") or {}).items():
        gaps = f["gaps"]["protection_rate"]
        out.print(f"fairness over {escape(column)}: " + ", ".join(f"{escape(g)} {_pct(v['protection_rate'])} (n={v['n']})" for g, v in f["groups"].items())
                  + (f"; gap {gaps['max_min']:.3f}" if gaps["max_min"] is not None else ""))
    for row in r.get("compare") or []:
        out.print(f"  {escape(row['label'])}: {row['method']} protection {_pct(row['protection_rate'])}, SSIM face "
                  f"{row['ssim_face'] if row['ssim_face'] is not None else float('nan'):.3f}, detection {_pct(row['detection_rate'])}")


@app.command()
def keygen(
    name: Path = typer.Argument(..., help="Private key file to create (mode 0600); the public key goes to NAME.pub."),
    unprotected: bool = typer.Option(False, "--unprotected", help="Store the private key unencrypted (only on a machine you trust)."),
    passphrase_file: Optional[Path] = typer.Option(None, "--passphrase-file", help="Protect the private key with the passphrase in this file; otherwise $ANONCLI_PASSPHRASE, otherwise a prompt."),
):
    """Make a key pair for --recipient: anonymize with NAME.pub, restore with NAME.

    The anonymizing machine needs only the public key and cannot restore what it wrote.
    """
    from .keys.keypair import KeyMaterialError, write_keypair
    from .keys.passphrase import PassphraseUnavailable, obtain_passphrase

    try:
        secret = None if unprotected else obtain_passphrase(passphrase_file, confirm=True, what="private key")
        public_path, fp = write_keypair(name, secret)
    except (KeyMaterialError, PassphraseUnavailable) as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot write {name}: {e.strerror or e}")
    out.print(f"private key: {name} ({'unprotected' if unprotected else 'passphrase-protected'}, mode 0600)\n"
              f"public key:  {public_path}  (fingerprint {fp})\n"
              f"anonymize with --keyfile FILE --recipient {public_path}; restore with --private-key {name}")


@app.command()
def methods(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """List every method with its parameters, defaults, source, reversibility, guarantee and weights."""
    import json

    from .methods import available_methods
    from .weights import locate

    specs = available_methods()

    def default_weights(spec) -> tuple[str, ...]:
        """The files a run with the method's defaults loads."""
        try:
            return spec.weights_needed(spec.resolve_params({}))
        except ValueError:   # a method with a required flag: what it always loads
            return spec.weights

    if as_json:
        data = [{"name": s.name, "summary": s.summary, "citation": s.citation, "reversible": s.reversible,
                 "formal_guarantee": s.formal_guarantee, "deterministic": s.deterministic,
                 "weights": {w: locate(w)[0] is not None for w in default_weights(s)},
                 "params": [{"flag": p.flag, "type": p.type.__name__, "default": p.default, "help": p.help,
                             "choices": p.choices, "min": p.minimum, "max": p.maximum} for p in s.params]} for s in specs]
        out.print_json(json.dumps(data))
        return
    for s in specs:
        table = Table(title=f"[bold]{s.name}[/] — {s.summary}", title_justify="left", show_lines=False)
        table.add_column("flag", style="cyan")
        table.add_column("default")
        table.add_column("meaning")
        for p in s.params:
            extra = f" One of: {', '.join(p.choices)}." if p.choices else ""
            table.add_row(p.flag, str(p.default), p.help + extra)
        out.print(table)
        weights = ", ".join(f"{w} ({'present' if locate(w)[0] else 'missing'})" for w in default_weights(s)) or "none"
        out.print(f"  source: {s.citation}\n  reversible: {'yes' if s.reversible else 'no'}; "
                  f"formal guarantee: {s.formal_guarantee or 'none'}; deterministic: {'yes' if s.deterministic else 'no'}; "
                  f"weights: {weights}\n")


@weights_app.command("list")
def weights_list(weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Look here first."),
                 as_json: bool = typer.Option(False, "--json", help="Machine-readable output: one object per entry.")):
    """Every pretrained file the project knows, with licence, source and whether it is present."""
    import json

    from .weights import REGISTRY, locate

    entries = []
    for e in REGISTRY.values():
        found, bad = locate(e.name, weights_dir)
        entries.append({"name": e.name, "file": e.filename, "status": "present" if found else ("corrupt" if bad else "missing"),
                        "found_at": found.source if found else None, "problems": bad, "sha256": e.sha256,
                        "licence": e.licence, "official_copy": e.url, "what": e.what})
    if as_json:
        out.print_json(json.dumps(entries))
        return
    # Names are never cut: the table holds what fits at 80 columns, each entry's file, place and source follow it.
    table = Table(title="pretrained files", title_justify="left")
    table.add_column("name", no_wrap=True, min_width=max(len(e["name"]) for e in entries))
    table.add_column("status", no_wrap=True)
    table.add_column("licence", overflow="fold")
    colour = {"present": "green", "corrupt": "red", "missing": "yellow"}
    for e in entries:
        table.add_row(e["name"], f"[{colour[e['status']]}]{e['status']}[/]", escape(e["licence"]))
    out.print(table)
    for e in entries:
        out.print(f"{e['name']}: {e['file']}" + (f", found at {e['found_at']}" if e["found_at"] else "")
                  + "".join(f"\n    corrupt copy: {p}" for p in e["problems"])
                  + f"\n    official copy: {e['official_copy']}", markup=False, highlight=False)
    out.print("sha256 of each entry: `anoncli weights verify`; `--json` for scripts. Search order: --weights-dir, "
              "$ANONCLI_WEIGHTS, the project's weights/, the user cache, then files bundled in installed packages.")


@weights_app.command("verify")
def weights_verify(weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Look here first.")):
    """Check the sha256 of every weights file found; exit 1 if any is corrupt."""
    from .weights import REGISTRY, locate

    corrupt = False
    for e in REGISTRY.values():
        found, bad = locate(e.name, weights_dir)
        for b in bad:
            corrupt = True
            out.print(f"[red]corrupt[/] {e.name}: {escape(str(b))}")
        out.print(f"{'[green]ok[/]' if found else '[yellow]missing[/]'} {e.name} sha256 {e.sha256}"
                  + (f" at {found.source}" if found else ""))
    raise typer.Exit(1 if corrupt else 0)


@weights_app.command("fetch")
def weights_fetch(name: str = typer.Argument(..., help="Registry name (see `anoncli weights list`).")):
    """Download a file from its official URL into the user cache, checking its sha256."""
    from .weights import REGISTRY, WeightsMissing, fetch

    if name not in REGISTRY:
        fail(f"no weights named {name!r}; known: {', '.join(REGISTRY)}")
    try:
        path = fetch(name)
    except WeightsMissing as e:
        fail(str(e), code=3)
    out.print(f"[green]fetched[/] {name} -> {path}")


@weights_app.command("import")
def weights_import(source: Path = typer.Argument(..., help="Folder holding weight files (names may differ; matched by sha256)."),
                   dest: Optional[Path] = typer.Option(None, "--dest", help="Install here instead of the user cache.")):
    """Copy every file in SOURCE whose sha256 matches a registry entry into the weights cache."""
    from .weights import import_dir, user_cache_dir

    if not source.is_dir():
        fail(f"{source} is not a folder")
    done = import_dir(source, dest)
    for name, path in done:
        out.print(f"[green]imported[/] {name} -> {path}")
    if not done:
        out.print(f"no file in {source} matches a registry entry")
    else:
        out.print(f"({len(done)} file(s); cache: {dest or user_cache_dir()})")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

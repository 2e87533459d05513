"""Start a generator from an earlier export, grown where its shapes allow (``anoncli train aei --init-from``).

A wider or extended network starts as the exported one (Net2Net-style widening; Chen et al.,
ICLR 2016): every tensor of the export goes into the leading slice of the new tensor; a new output
channel keeps its fresh initialisation (so it carries a signal and can learn); an old output never
reads a new input (those weights are zero), so the grown network computes what the export computed
until training moves the new weights. This holds wherever the channels a configuration adds come
after the old ones: wider generator blocks (``generator_channels``) and the full-resolution input
convolution (``full_res_channels``), as long as a block whose input and output widths were equal
keeps them equal (else it gains a shortcut the export lacks). A wider attribute encoder interleaves
new channels with old ones in its concatenated maps. Those starts are not function-preserving;
``grow_from`` measures the output difference in every case, so the caller can say so.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GrowReport:
    copied: int            # tensors copied whole
    grown: int             # tensors placed into a larger one
    fresh: int             # tensors the export does not have (new modules)
    max_output_difference: float   # |new(x) − old(x)| on a random batch, eval mode; 0 when function-preserving

    def describe(self) -> str:
        return (f"{self.copied} tensors copied, {self.grown} grown, {self.fresh} new; largest output difference to the "
                f"export {self.max_output_difference:.2e}")


def _input_dim(module) -> int | None:
    """Which dimension of ``module.weight`` indexes its input channels (None: no weight to guard)."""
    from torch import nn

    if isinstance(module, nn.ConvTranspose2d):
        return 0
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        return 1
    return None


def grow_state(old: dict, net) -> tuple[dict, int, int, int]:
    """The state dict of ``net`` with ``old``'s tensors in place (see the module docstring)."""
    import torch

    modules = dict(net.named_modules())
    state = {k: v.clone() for k, v in net.state_dict().items()}
    copied = grown = fresh = 0
    for name, new in state.items():
        if name not in old:
            fresh += 1
            continue
        src = old[name].to(new.dtype)
        if src.shape == new.shape:
            new.copy_(src)
            copied += 1
            continue
        if src.ndim != new.ndim or any(a > b for a, b in zip(src.shape, new.shape)):
            raise ValueError(f"cannot start {name} {tuple(new.shape)} from the export's {tuple(src.shape)}: "
                             "a network can only grow from an export")
        new[tuple(slice(0, n) for n in src.shape)] = src
        module_name, _, leaf = name.rpartition(".")
        in_dim = _input_dim(modules.get(module_name)) if leaf == "weight" else None
        if in_dim is not None and new.ndim >= 2 and new.shape[in_dim] > src.shape[in_dim]:
            out_dim = 1 - in_dim
            index = [slice(None)] * new.ndim
            index[in_dim] = slice(src.shape[in_dim], None)
            index[out_dim] = slice(0, src.shape[out_dim])
            new[tuple(index)] = 0.0     # old outputs ignore the new inputs
        grown += 1
    unused = sorted(set(old) - set(state))
    if unused:
        raise ValueError(f"the export has tensors this network lacks ({', '.join(unused[:3])}…): another layout")
    return {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}, copied, grown, fresh


def grow_from(old_state: dict, old_config, net, seed: int = 0) -> GrowReport:
    """Load ``old_state`` (an AEINet state dict of ``old_config``) into the larger ``net`` in place;
    measures how far the grown network's output is from the export's on a random batch."""
    import torch
    import torch.nn.functional as F

    from ..models.aei import AEINet

    state, copied, grown, fresh = grow_state(old_state, net)
    net.load_state_dict(state)
    device = next(net.parameters()).device
    old = AEINet(old_config)
    old.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in old_state.items()})
    old.to(device)
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(2, 3, net.config.resolution, net.config.resolution, generator=g) * 2 - 1).to(device)
    identity = F.normalize(torch.randn(2, net.config.id_dim, generator=g), dim=1).to(device)
    was_training = net.training
    net.eval()
    old.eval()
    with torch.no_grad():
        difference = float((net(identity, x)[0] - old(identity, x)[0]).abs().max())
    net.train(was_training)
    return GrowReport(copied, grown, fresh, difference)

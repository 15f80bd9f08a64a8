"""What a checkpoint holds to continue training exactly: weights, optimizer and generators."""
from __future__ import annotations

from collections.abc import Mapping

import torch

from dsc.nn.train import EpochReport


def rng_state() -> dict[str, torch.Tensor]:
    """Torch's global generators (dropout draws from them), as a checkpoint stores them."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return state


def set_rng_state(state: Mapping[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    cuda = [state[k] for k in sorted(state) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def checkpoint_payload(report: EpochReport, extra: Mapping[str, object]) -> dict:
    """A checkpoint that ``torch.load(weights_only=True)`` reads: tensors, numbers, strings.

    It holds what continuing needs: weights, optimizer state and the generators' state.
    """
    return {
        "epoch": report.epoch,
        "model_state": {k: v.detach().cpu().contiguous() for k, v in report.model.state_dict().items()},
        "optimizer_state": report.optimizer.state_dict(),
        "rng_state": rng_state(),
        "metrics": dict(report.metrics),
        **extra,
    }

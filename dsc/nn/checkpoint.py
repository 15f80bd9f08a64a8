"""What a checkpoint holds: weights always; to continue training exactly, optimizer and generators too.

A *full* checkpoint (:func:`checkpoint_payload`) carries everything resuming needs; a
*weights* checkpoint (:func:`weights_payload`) only what analysis, ``dsc snapshot`` and the
registry read. Both are dicts that ``torch.load(weights_only=True)`` reads.
"""

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
    """Restore torch's global generators from ``state``, as :func:`rng_state` returned it.

    Parameters
    ----------
    state : mapping of str to Tensor
        ``"cpu"`` always; ``"cuda0"``, ``"cuda1"``, ... when CUDA was available. The CUDA
        generators are restored only when this machine has as many devices as were saved;
        otherwise (fewer, more, none) they are left as they are.
    """
    torch.set_rng_state(state["cpu"])
    cuda = [state[k] for k in sorted(state) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def weights_payload(report: EpochReport, extra: Mapping[str, object]) -> dict:
    """A weights checkpoint: the epoch, its weights (CPU, contiguous), metrics and ``extra``."""
    return {
        "epoch": report.epoch,
        "model_state": {k: v.detach().cpu().contiguous() for k, v in report.model.state_dict().items()},
        "metrics": dict(report.metrics),
        **extra,
    }


def resume_state(optimizer: torch.optim.Optimizer) -> dict:
    """What a weights checkpoint lacks to continue training: the optimizer's and generators' state.

    The tensors are the live optimizer's: copy them to keep them while training goes on.
    """
    return {"optimizer_state": optimizer.state_dict(), "rng_state": rng_state()}


def checkpoint_payload(report: EpochReport, extra: Mapping[str, object]) -> dict:
    """A full checkpoint that ``torch.load(weights_only=True)`` reads: tensors, numbers, strings.

    It holds what continuing needs: weights, optimizer state and the generators' state.
    """
    assert report.optimizer is not None  # a report of a training epoch
    return {**weights_payload(report, extra), **resume_state(report.optimizer)}


def is_full(ckpt: Mapping[str, object]) -> bool:
    """Whether a loaded checkpoint can be resumed from (it carries the optimizer's state)."""
    return "optimizer_state" in ckpt

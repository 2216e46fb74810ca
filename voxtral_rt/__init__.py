"""voxtral-rt: Voxtral-Mini-4B-Realtime on CPU (eager PyTorch reference, ExecuTorch export, C++ runner)."""

__version__ = "0.1.0"


def quiet_known_noise() -> None:
    """Silence messages known to be harmless here, so CLI output stays readable: torchao's CUDA-only kernels
    are absent from a CPU build, and torch notes an API change of its own. Call before torchao is imported."""
    import logging
    import warnings

    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated", category=FutureWarning)

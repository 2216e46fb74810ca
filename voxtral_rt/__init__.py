"""voxtral-rt: Voxtral-Mini-4B-Realtime on CPU (eager PyTorch reference, ExecuTorch export, C++ runner)."""

__version__ = "0.1.0"

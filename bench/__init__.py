"""metabench: reproduce meta-learning papers and check their reported numbers.

The Python API mirrors the command line:

>>> import metabench
>>> spec = metabench.load_spec("protonet")
>>> result, path = metabench.run_benchmark("protonet", shots=1, profile="smoke")
>>> frame = metabench.load_results("results")
>>> model = metabench.load_model(path)
>>> scores = metabench.evaluate_on_images(model, my_images, ways=5, shots=1, queries=5, episodes=100)
>>> table = metabench.list_benchmarks()
>>> manifest = metabench.sweep("maml", "sinusoid-*", profiles="smoke", seeds="0-4", output="runs")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metabench.api import (
        evaluate_on_images,
        list_benchmarks,
        load_model,
        load_results,
        load_spec,
        run_benchmark,
        run_benchmarks,
        sweep,
        sweep_status,
    )

__version__ = "0.1.0"
__all__ = [
    "__version__",
    "evaluate_on_images",
    "list_benchmarks",
    "load_model",
    "load_results",
    "load_spec",
    "run_benchmark",
    "run_benchmarks",
    "sweep",
    "sweep_status",
]


def __getattr__(name: str) -> Any:
    """The API on first use: importing a submodule (``metabench.inner``, say) then does not load pandas
    and the runner, which keeps worker processes and the speed benchmark's baseline memory small."""
    if name in __all__:
        from metabench import api

        return getattr(api, name)
    raise AttributeError(f"module 'metabench' has no attribute {name!r}")

"""metabench: reproduce meta-learning papers and check their reported numbers.

The Python API mirrors the command line:

>>> import metabench
>>> spec = metabench.load_spec("protonet")
>>> result, path = metabench.run_benchmark("protonet", shots=1, profile="smoke")
>>> frame = metabench.load_results("results")
>>> model = metabench.load_model(path)
>>> scores = metabench.evaluate_on_images(model, my_images, ways=5, shots=1, queries=5, episodes=100)
"""

from metabench.api import evaluate_on_images, load_model, load_results, load_spec, run_benchmark

__version__ = "0.1.0"
__all__ = ["__version__", "evaluate_on_images", "load_model", "load_results", "load_spec", "run_benchmark"]

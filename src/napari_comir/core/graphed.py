"""CUDA graphs of a network's forward pass, replayed for inputs of a shape seen before.

At the sizes a registration uses (a few hundred pixels), a small U-Net on a GPU spends its time
launching ~60 kernels, not running them; one graph replay launches them all at once. Graphs are
cached per network and input shape and captured on the first call with a new shape, so repeated
shapes (tiles of one large image, batches of same-size pairs) pay the capture once.

A graph reads the weights from the addresses it was captured with: in-place updates (optimiser
steps, ``load_state_dict``) are seen, while weights moved to new memory (``.to()``, assignment)
make the cache capture a new graph.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable

import torch

#: Graphs kept per network (least recently used dropped first); each holds its activations.
MAX_GRAPHS = 4

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _Entry:
    def __init__(self, weights: list[torch.Tensor], graph, static_in, static_out):
        self.weights = weights  # also keeps them alive: the graph reads their memory
        self.pointers = [w.data_ptr() for w in weights]
        self.graph, self.static_in, self.static_out = graph, static_in, static_out


def graphed_forward(network: torch.nn.Module, forward: Callable[[torch.Tensor], torch.Tensor],
                    x: torch.Tensor, key: tuple) -> torch.Tensor:
    """``forward(x)`` (which runs ``network``) through a cached CUDA graph; ``x`` on a CUDA device.

    ``key`` names what else ``forward`` depends on (precision, averaging); call it under
    ``torch.inference_mode()``. Returns a new tensor (the graph's output buffer is reused).
    """
    weights = list(network.state_dict(keep_vars=True).values())
    graphs = _CACHE.setdefault(network, OrderedDict())
    full_key = (tuple(x.shape), x.dtype, x.device, key)
    entry = graphs.get(full_key)
    if entry is None or entry.pointers != [w.data_ptr() for w in weights]:
        entry = _capture(weights, forward, x)
        graphs[full_key] = entry
        while len(graphs) > MAX_GRAPHS:
            graphs.popitem(last=False)
    graphs.move_to_end(full_key)
    entry.static_in.copy_(x)
    entry.graph.replay()
    return entry.static_out.clone()


def _capture(weights: list[torch.Tensor], forward, x: torch.Tensor) -> _Entry:
    static_in = x.clone()
    side = torch.cuda.Stream(x.device)
    side.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(side):  # warm-up off the capture: cuDNN/cuBLAS lazy set-up
        for _ in range(2):
            forward(static_in)
    torch.cuda.current_stream(x.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # thread_local: another thread's CUDA work (a GUI worker) must not break this capture.
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        static_out = forward(static_in)
    return _Entry(weights, graph, static_in, static_out)

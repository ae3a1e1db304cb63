"""CUDA graphs of a conv pack's training step (forward + backward), one per batch shape.

A pack's step is a few hundred small kernels; at narrow widths launching them costs far
more than running them. The first batch of each shape (a pack sees one or two: full
batches and an epoch's last, shorter one) is captured once into a CUDA graph with static
input buffers; every later step copies its batch in and replays the graph. The graph
reads the parameters `flat` and BatchNorm's running statistics where they live and
writes the gradient into `grad` itself, so optimizers, checkpoints and diverged members
(all of which change those tensors in place) see no difference. The warm-up runs before
capture would move the running statistics: they are saved and put back.

`ddsweep work --no-cuda-graphs` ($DDSWEEP_CUDA_GRAPHS=0) turns it off (eager steps, the same numbers).
"""

from __future__ import annotations

import torch

MAX_SHAPES = 4  # more distinct batch shapes than this: eager steps for the rest
WARMUP = 2  # eager steps before capture (cuDNN's benchmark picks its kernels here)


class _Graph:
    def __init__(self, model, x: torch.Tensor, y: torch.Tensor, loss: str):
        self.x = x.clone()
        self.y = y.clone()
        saved = [t.clone() for pair in model.running.values() for t in pair]
        if model._graph_pool is None:
            model._graph_pool = torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP):
                model._loss_and_grad(self.x, self.y, loss)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=model._graph_pool):
            self.loss = model._loss_and_grad(self.x, self.y, loss)
        with torch.no_grad():
            for t, s in zip((t for pair in model.running.values() for t in pair), saved):
                t.copy_(s)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()
        return self.loss.clone()


def graphed_loss_and_grad(model, x: torch.Tensor, y: torch.Tensor, loss: str):
    """model.loss_and_grad through a CUDA graph, or None where none applies (then step eagerly)."""
    key = (tuple(x.shape), x.dtype, tuple(y.shape), y.dtype, loss, model.training, x.device)
    graph = model._graphs.get(key)
    if graph is None:
        if len(model._graphs) >= MAX_SHAPES or torch.cuda.is_current_stream_capturing():
            return None
        try:
            graph = _Graph(model, x, y, loss)
        except torch.OutOfMemoryError:
            raise  # the pack is too big for the device: its worker trains it in smaller parts
        except RuntimeError as e:  # capture failed: eager from now on
            import warnings

            warnings.warn(f"CUDA graph capture of the training step failed, stepping eagerly: {e}")
            model.cuda_graphs = False
            return None
        model._graphs[key] = graph
    return graph(x, y)

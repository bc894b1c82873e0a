"""Parallel HST (paper appendix C, Table 9): the side network runs while the ViT is still computing.

Side block ``i`` needs only ViT layer ``i``'s output, so the two networks form a pipeline: the ViT
(producer) hands each layer's output through a :class:`LayerPipe` to the side network (consumer), which
runs in a second thread. On a GPU each thread issues its kernels to its own CUDA stream, so the two
networks' kernels overlap on the device and their launches overlap on the host (PyTorch releases the
GIL inside its ops); on a CPU the two threads share the intra-op thread pool, so the gain there is
only what one network leaves of the cores idle.

Correctness across threads and streams:

* thread-local autograd / inference / autocast state is copied into the consumer thread, so it
  records the same graph the serial forward would (autograd itself is thread-safe; ``backward``
  later runs each op's backward on the stream its forward ran on and syncs across streams);
* CUDA: the consumer stream first waits for the producer's stream (the padded image), then for an
  event recorded after each layer before using it; a tensor made on one stream and used on the
  other is ``record_stream``-ed there, so the caching allocator does not reuse its memory early; at
  the end the producer's stream waits for the consumer's before the outputs are used.

The values are the serial forward's (same ops, same order within each network); the tests compare
outputs and gradients. Not for ``torch.compile`` (threads are not traced): under compilation
:class:`~mmpeft.backbones.hst_vit.HSTViT` runs serially. FLOP counters (``FlopCounterMode``) are
per-thread dispatch modes and would miss the consumer's ops: count FLOPs with the serial mode (the
arithmetic is the same).
"""
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

_SIDE_STREAMS: Dict[torch.device, 'torch.cuda.Stream'] = {}


def _side_stream(device: torch.device) -> 'torch.cuda.Stream':
    if device not in _SIDE_STREAMS:
        _SIDE_STREAMS[device] = torch.cuda.Stream(device=device)
    return _SIDE_STREAMS[device]


class LayerPipe:
    """Layer outputs handed from the producer thread to the consumer thread, in order.

    ``put(i, x)`` (producer) publishes layer ``i``'s tensor; ``get(i)`` (consumer) blocks until it is
    there and, on CUDA, makes the consumer's stream wait for it. ``fail(exc)`` wakes the consumer
    with the producer's error.
    """

    def __init__(self, num_layers: int, device: torch.device):
        self._items: List[Optional[torch.Tensor]] = [None] * num_layers
        self._events: List[Optional[Any]] = [None] * num_layers
        self._ready = [threading.Event() for _ in range(num_layers)]
        self._error: Optional[BaseException] = None
        self._cuda = device.type == 'cuda'

    def put(self, i: int, x: torch.Tensor) -> None:
        if self._cuda:
            event = torch.cuda.Event()
            event.record()  # on the producer's current stream
            self._events[i] = event
        self._items[i] = x
        self._ready[i].set()

    def fail(self, exc: BaseException) -> None:
        self._error = exc
        for r in self._ready:
            r.set()

    def get(self, i: int) -> torch.Tensor:
        self._ready[i].wait()
        if self._error is not None:
            raise RuntimeError('the ViT (producer) failed; see the error raised by the forward') from self._error
        x = self._items[i]
        self._items[i] = None  # the consumer holds the only reference from here on
        if self._cuda:
            stream = torch.cuda.current_stream(x.device)
            stream.wait_event(self._events[i])
            x.record_stream(stream)
        return x


def _thread_state() -> Callable[[], Any]:
    """A context-manager factory that re-creates this thread's autograd / autocast state elsewhere."""
    grad = torch.is_grad_enabled()
    inference = torch.is_inference_mode_enabled()
    autocast = [(dev, torch.get_autocast_dtype(dev)) for dev in ('cpu', 'cuda')
                if torch.is_autocast_enabled(dev)]

    def enter(stack):
        stack.enter_context(torch.inference_mode(inference))
        stack.enter_context(torch.set_grad_enabled(grad))
        for dev, dtype in autocast:
            stack.enter_context(torch.autocast(dev, dtype=dtype))
    return enter


def run_pipelined(num_layers: int, device: torch.device,
                  producer: Callable[[LayerPipe], None],
                  consumer: Callable[[LayerPipe], Sequence[torch.Tensor]]) -> List[torch.Tensor]:
    """Run ``producer(pipe)`` in this thread and ``consumer(pipe)`` in a second one, concurrently.

    Args:
        num_layers: layers the producer will ``put`` (indices ``0 .. num_layers - 1``).
        device: where the tensors live (CUDA: the consumer gets its own stream).
        producer: computes the layers in order and calls ``pipe.put(i, x)`` after each.
        consumer: calls ``pipe.get(i)`` in order and returns its output tensors.

    Returns:
        The consumer's outputs, safe to use on this thread's current stream.
    """
    import contextlib

    pipe = LayerPipe(num_layers, device)
    enter_state = _thread_state()
    result: Dict[str, Any] = {}
    cuda = device.type == 'cuda'
    main_stream = torch.cuda.current_stream(device) if cuda else None
    side_stream = _side_stream(device) if cuda else None
    if cuda:
        side_stream.wait_stream(main_stream)  # inputs made on the main stream before the threads start

    def consume() -> None:
        try:
            with contextlib.ExitStack() as stack:
                enter_state(stack)
                if cuda:
                    stack.enter_context(torch.cuda.device(device))
                    stack.enter_context(torch.cuda.stream(side_stream))
                result['out'] = list(consumer(pipe))
        except BaseException as exc:  # re-raised on the calling thread
            result['error'] = exc

    thread = threading.Thread(target=consume, name='hst-side-network', daemon=True)
    thread.start()
    try:
        producer(pipe)
    except BaseException as exc:
        pipe.fail(exc)
        thread.join()
        raise
    thread.join()
    if 'error' in result:
        raise result['error']
    outs = result['out']
    if cuda:
        main_stream.wait_stream(side_stream)
        for t in outs:
            t.record_stream(main_stream)
    return outs

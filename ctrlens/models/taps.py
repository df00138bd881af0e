"""Forward hooks on named taps, shared by neuron statistics, probes and saliency.

:class:`TapSession` registers one forward hook per distinct module for the life of a ``with``
block, counts the module's calls within each forward pass, and hands each tapped output to a
callback. A callback may return a tensor to *replace* the output (how saliency substitutes
embeddings). Calls are counted per forward pass, so a module that is called more often than its
taps say is caught and refused with a message naming it -- never silently mixed (captum #1104).
Hooks are removed on exit, so an idle model pays nothing (nnsight's lesson).

Packed sequence outputs. A model may run a masked layer on the real positions only (DIN's attention
unit at inference skips the ~55% of behaviour slots that are padding), giving ``[n, N]`` with ``n``
the real positions of the mask in row-major order instead of ``[B, L, N]``. It may do so only when
every hook on the module accepts such outputs (:func:`accepts_packed`); a session opts in with
``packed=True`` and its callback then sees ``TapEvent.packed``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Mapping

from torch import Tensor, nn

from ctrlens.data.batch import Batch
from ctrlens.models.interface import FieldSpec, LayerSpec, ModelView, Tap


class TapError(RuntimeError):
    """A tap whose module ran a different number of times than declared."""


@dataclass
class TapEvent:
    """One tapped output: ``output`` of tap ``name`` during the forward pass on ``batch``.

    ``mask`` is the bool ``[B, L]`` padding mask when the tap is over a sequence, else ``None``.
    """

    name: str
    tap: Tap
    output: Tensor
    batch: Batch
    mask: Tensor | None
    packed: bool = False  # output is [n, ...] over the real positions of mask (row-major), not [B, L, ...]


def accepts_packed(module: nn.Module) -> bool:
    """Whether ``module`` may return only the real positions of a sequence (``[n, N]``, see the module
    docstring): no pre-hooks, and every forward hook (if any) comes from a ``packed=True`` session."""
    if module._forward_pre_hooks:
        return False
    return all(getattr(h, "ctrlens_packed", False) for h in module._forward_hooks.values())


Callback = Callable[[TapEvent], "Tensor | None"]


class TapSession:
    """Run a model's forward with callbacks on named taps.

    Args:
        view: the model's :class:`ModelView`.
        taps: name -> :class:`Tap`, :class:`LayerSpec` or :class:`FieldSpec`.
        callback: called once per tap per forward with a :class:`TapEvent`; may return a
            replacement for the output.
        packed: the callback handles packed sequence outputs (``TapEvent.packed``), so models may
            run masked layers on their real positions only (:func:`accepts_packed`).

    Example::

        with TapSession(view, view.layers, on_output) as s:
            for batch in loader:
                outputs = s.forward(batch)
    """

    def __init__(
        self, view: ModelView, taps: Mapping[str, Tap | LayerSpec | FieldSpec], callback: Callback, packed: bool = False
    ):
        self.view = view
        self.packed = packed
        self.taps: dict[str, Tap] = {k: getattr(v, "tap", v) for k, v in taps.items()}  # type: ignore[misc]
        self.callback = callback
        self._by_module: dict[int, list[tuple[str, Tap]]] = defaultdict(list)
        self._modules: dict[int, nn.Module] = {}
        for name, tap in self.taps.items():
            self._by_module[id(tap.module)].append((name, tap))
            self._modules[id(tap.module)] = tap.module
        self._handles: list = []
        self._counts: dict[int, int] = defaultdict(int)
        self._batch: Batch | None = None

    def __enter__(self) -> "TapSession":
        for mid, mod in self._modules.items():
            self._handles.append(mod.register_forward_hook(self._make_hook(mid)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _make_hook(self, mid: int):
        def hook(module: nn.Module, args, output):
            if self._batch is None:
                return None  # a forward outside TapSession.forward: leave it alone
            i = self._counts[mid]
            self._counts[mid] = i + 1
            replaced = None
            for name, tap in self._by_module[mid]:
                want = 0 if tap.call is None else tap.call
                if want != i:
                    continue
                out = output if replaced is None else replaced
                if not isinstance(out, Tensor):
                    raise TapError(
                        f"tap {name!r}: module {type(module).__name__} returned {type(out).__name__}, not a tensor; "
                        "tap a module that returns one tensor"
                    )
                mask = self._batch.masks.get(tap.mask) if tap.mask else None
                if tap.mask and mask is None:
                    raise TapError(f"tap {name!r}: batch has no mask for sequence field {tap.mask!r}")
                # a masked output that is not [B, L, ...] can only be the real positions (see accepts_packed)
                packed = self.packed and mask is not None and out.dim() == 2
                r = self.callback(TapEvent(name, tap, out, self._batch, mask, packed))
                if r is not None:
                    replaced = r
            return replaced

        hook.ctrlens_packed = self.packed  # type: ignore[attr-defined]
        return hook

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Run the model's forward on ``batch`` with the taps live; check call counts."""
        if not self._handles:
            raise TapError("TapSession.forward called outside its 'with' block")
        self._counts.clear()
        self._batch = batch
        try:
            out = self.view(batch)
        finally:
            self._batch = None
        self._check_counts()
        return out

    def _check_counts(self) -> None:
        for mid, entries in self._by_module.items():
            n = self._counts.get(mid, 0)
            mod = self._modules[mid]
            for name, tap in entries:
                if tap.call is None and n > 1:
                    raise TapError(
                        f"tap {name!r}: module {type(mod).__name__} was called {n} times in one forward; "
                        f"statistics of different calls would be mixed. Name each call, e.g. "
                        f"{{'{name}#0': ({type(mod).__name__.lower()}, 0), '{name}#1': ({type(mod).__name__.lower()}, 1)}}"
                    )
                want = 0 if tap.call is None else tap.call
                if n <= want:
                    raise TapError(
                        f"tap {name!r}: module {type(mod).__name__} was called {n} time(s) in the forward, "
                        f"but the tap reads call #{want}; is the module on the forward path?"
                    )

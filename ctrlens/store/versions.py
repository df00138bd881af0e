"""Model versions without hand-made hashes: register a :class:`~ctrlens.models.interface.ModelView`
(or a checkpoint and its loader) and let ctrlens work out the key the store files results under.

A model version is the triple (model name, checkpoint hash, schema hash):

* **checkpoint hash** -- ``view.checkpoint.version``: a ``ctrlens train`` checkpoint's weights hash,
  any other checkpoint file's content hash (sha256 of its bytes, see
  :func:`ctrlens.models.loader.content_hash`); for a view built in memory (no checkpoint), the weights
  hash of its ``state_dict`` (:func:`ctrlens.models.checkpoint.weights_hash`);
* **schema hash** -- the data schema's hash (``schema.hash``): the checkpoint's own for a ctrlens
  checkpoint (it is refused for data of another schema), else the schema of the data it was loaded for;
* **config** -- ``{"model_name": ..., **the checkpoint's model config}`` (stored with the version).

The nightly job registers its models with the same rule, so results written by hand and by
``ctrlens nightly`` for the same checkpoint land on the same version.

::

    from ctrlens.models.loader import load_model
    view = load_model("models/my-ctr-2026-01-05.pt", ds.schema, "my_loader.py:load")
    vid = store.register_view("my-ctr", view)
    store.write_day(vid, "2026-01-05", "analysis", [quality, *summary.to_results()])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ctrlens.errors import InputError


def version_key(view: Any, schema: Any = None) -> tuple[str, str, dict[str, Any]]:
    """``(checkpoint_hash, schema_hash, config)`` of a view, as :meth:`Store.register_model` takes them.

    ``schema`` is needed only for a view that did not come from a checkpoint (its schema hash).
    """
    from ctrlens.models.interface import ModelView, checkpoint_of

    if not isinstance(view, ModelView):
        raise InputError(f"expected a ctrlens ModelView (ctrlens.attach, model.lens() or load_model), got {type(view).__name__}")
    info = checkpoint_of(view)
    if info is not None:
        return str(info.version), str(info.schema_hash), {"model_name": info.model_name, **dict(info.config)}
    if schema is None:
        schema = getattr(view.model, "schema", None)
    if schema is None:
        raise InputError(
            f"model {view.name!r} did not come from a checkpoint, so its schema is unknown: pass schema= "
            "(the data's schema), or load it with ctrlens.models.loader.load_model(checkpoint, schema, loader)"
        )
    from ctrlens.models.checkpoint import weights_hash

    return weights_hash(view.model.state_dict()), str(schema.hash), {"model_name": view.name}


def register_view(store: Any, name: str, view: Any, *, schema: Any = None) -> int:
    """Register ``view``'s model version under ``name`` (idempotent) and return its id."""
    ck, sh, config = version_key(view, schema)
    return int(store.register_model(name, ck, sh, config))


def register_checkpoint(store: Any, name: str, checkpoint: str | Path, schema: Any, loader: Any = None, *,
                        device: str = "cpu") -> tuple[int, Any]:  # fmt: skip
    """Load ``checkpoint`` with ``loader`` (default: the reference models') for data of ``schema``,
    register its version under ``name``; returns ``(version id, view)``."""
    from ctrlens.models.loader import load_model

    view = load_model(checkpoint, schema, loader, device=device)
    return register_view(store, name, view), view


__all__ = ["register_checkpoint", "register_view", "version_key"]

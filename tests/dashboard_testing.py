"""Drive the dashboard's callbacks over HTTP without a browser (tests and the speed benchmark).

:class:`CallbackClient` posts to ``/_dash-update-component`` exactly what the browser would send
for one callback (through the Flask test client, so JSON serialisation of the figures is included)
and returns the decoded outputs::

    client = CallbackClient(app)
    out = client.call("nr-heatmap.figure", {"nr-model.value": "din", "nr-layer.value": "mlp.0", ...})
    out["nr-heatmap"]["figure"]
"""

from __future__ import annotations

import json
from typing import Any


def split_outputs(key: str) -> list[tuple[str, str]]:
    """A callback-map key (``..a.x...b.y..`` or ``a.x``) -> [(id, property)] (``@hash`` kept)."""
    parts = key[2:-2].split("...") if key.startswith("..") else [key]
    out = []
    for p in parts:
        base, at, digest = p.partition("@")
        cid, _, prop = base.rpartition(".")
        out.append((cid, prop + at + digest))
    return out


class CallbackClient:
    """Calls callbacks of a Dash ``app`` by (one of) their output ids."""

    def __init__(self, app: Any, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.client = app.server.test_client()
        self.headers = headers or {}

    def key(self, output: str) -> str:
        """The callback-map key of the callback writing ``output`` (``"id.property"``, or a key)."""
        if output in self.app.callback_map:
            return output
        cid, _, prop = output.rpartition(".")
        hits = [k for k in self.app.callback_map if (cid, prop) in [(i, p.split("@")[0]) for i, p in split_outputs(k)]]
        if not hits:
            raise KeyError(f"no callback writes {output}")
        return hits[0]

    def inputs(self, output: str) -> list[str]:
        """``id.property`` of the inputs, then the states, of the callback writing ``output``."""
        cb = self.app.callback_map[self.key(output)]
        return [f"{i['id']}.{i['property']}" for i in cb["inputs"]] + [f"{s['id']}.{s['property']}" for s in cb["state"]]

    def call(self, output: str, values: dict[str, Any], *, trigger: str | None = None) -> dict[str, dict[str, Any]] | None:
        """Run the callback with input/state ``values`` ("id.prop" -> value; missing ones are None).

        Returns {component id: {property: value}}, or None when the callback declined (PreventUpdate).
        """
        key = self.key(output)
        cb = self.app.callback_map[key]
        outs = [{"id": i, "property": p} for i, p in split_outputs(key)]

        def spec(items: list[dict[str, str]]) -> list[dict[str, Any]]:
            return [{"id": i["id"], "property": i["property"], "value": values.get(f"{i['id']}.{i['property']}")} for i in items]

        inputs = spec(cb["inputs"])
        body = {
            "output": key,
            "outputs": outs if key.startswith("..") else outs[0],
            "inputs": inputs,
            "state": spec(cb["state"]),
            "changedPropIds": [trigger or f"{inputs[0]['id']}.{inputs[0]['property']}"],
        }
        r = self.client.post("/_dash-update-component", data=json.dumps(body), content_type="application/json", headers=self.headers)
        if r.status_code == 204:
            return None
        if r.status_code != 200:
            raise RuntimeError(f"callback {output}: HTTP {r.status_code}: {r.get_data(as_text=True)[:500]}")
        return r.get_json()["response"]


def component_values(tree: Any) -> dict[str, Any]:
    """``"id.prop" -> value`` of every component with a string id in a layout (as JSON)."""
    out: dict[str, Any] = {}

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for n in node:
                walk(n)
            return
        if not isinstance(node, dict) or "props" not in node:
            return
        props = node["props"]
        cid = props.get("id")
        if isinstance(cid, str):
            for k, v in props.items():
                if k not in ("children", "id"):
                    out[f"{cid}.{k}"] = v
        walk(props.get("children"))

    walk(tree)
    return out


class PageSession:
    """One page as the browser loads it: the router's layout, then every callback that fills it.

    ``load(path, search)`` renders the page and returns its content callbacks' outputs; ``timings``
    records how long each callback took (seconds, HTTP round trip through the test client).
    """

    SKIP = ("url.", "synced.", "nav.", "data-version.")

    def __init__(self, app: Any, headers: dict[str, str] | None = None, *, cold: bool = False) -> None:
        self.client = CallbackClient(app, headers)
        self.app = app
        self.cold = cold  # empty the dashboard's query cache before every callback (worst case)
        self.values: dict[str, Any] = {}
        self.timings: dict[str, list[float]] = {}

    def _timed(self, output: str, values: dict[str, Any], trigger: str | None = None) -> Any:
        import time

        if self.cold:
            self.app.ctrlens_data.invalidate()
        t = time.perf_counter()
        out = self.client.call(output, values, trigger=trigger)
        self.timings.setdefault(output, []).append(time.perf_counter() - t)
        return out

    def content_callbacks(self, prefix: str) -> list[str]:
        """First outputs of the callbacks that fill the page (figures, tables), not option lists."""
        outs = []
        for key, cb in self.app.callback_map.items():
            first = split_outputs(key)[0]
            name = f"{first[0]}.{first[1].split('@')[0]}"
            if not first[0].startswith(prefix + "-") or "@" in first[1] or name.endswith((".options", ".data")):
                continue
            if any(i["property"] in ("n_clicks", "clickData") for i in cb["inputs"]):
                continue
            outs.append(name)
        return outs

    def load(self, path: str, search: str = "", data_version: Any = None) -> dict[str, Any]:
        out = self._timed("page.children", {"url.pathname": path, "url.search": search})
        page = out["page"]["children"]
        self.values = {"url.pathname": path, "url.search": search, "data-version.data": data_version, **component_values(page)}
        self.page = page
        prefix = next((k.split("-")[0] for k in self.values if "-" in k.split(".")[0] and not k.startswith(("data-version",))), "")
        results: dict[str, Any] = {}
        for output in self.content_callbacks(prefix):
            needed = self.client.inputs(output)
            if not all(n in self.values or n.startswith(self.SKIP) for n in needed):
                continue  # its components are not on this page (e.g. no alert selected)
            res = self._timed(output, self.values)
            if res:
                for cid, props in res.items():
                    for k, v in props.items():
                        results[f"{cid}.{k}"] = v
        return results

    def update(self, output: str, changes: dict[str, Any]) -> Any:
        """Re-run the callback writing ``output`` after ``changes`` ("id.prop" -> value) to the page."""
        self.values.update(changes)
        return self._timed(output, self.values, trigger=next(iter(changes)))


class ServerThread:
    """Serve a Dash app on ``host`` (a free port unless given) in a background thread::

        with ServerThread(app) as url:   # "http://127.0.0.1:54321"
            ...
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        from werkzeug.serving import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):
            def log_request(self, *args: Any, **kw: Any) -> None:  # one line per request would drown test output
                pass

        self.server = make_server(host, port, app.server, threaded=True, request_handler=Quiet)
        self.url = f"http://{host}:{self.server.server_port}"
        import threading

        self.thread = threading.Thread(target=self.server.serve_forever, name="ctrlens-dashboard", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)


__all__ = ["CallbackClient", "PageSession", "ServerThread", "component_values", "split_outputs"]

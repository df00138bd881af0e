"""What is sent: one Slack message or JSON document per alert, one e-mail digest per run.

Every link is absolute when ``notify.base_url`` is set: the evidence links the diagnosis stored
(``/features?model=..&day=..&field=..``) and the alert itself (``/alerts?model=..&alert=ID``), as
the dashboard's URL parameters define them (:mod:`ctrlens.dashboard.params`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlencode

import pandas as pd

from ctrlens.notify.config import SEVERITY_LEVEL, Channel
from ctrlens.results import jsonable

MAX_NUMBERS = 3  # evidence rows quoted per alert


@dataclass(frozen=True)
class Item:
    """One open alert to deliver (a row of :func:`ctrlens.store.deliveries.open_alerts`)."""

    alert_id: int
    model: str
    finding: str
    subject: str
    severity: str
    score: float | None
    title: str | None
    action: str | None
    day: str
    first_seen: str
    last_seen: str
    episode: int = 0
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.model, self.finding, self.subject, self.episode)

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def items(frame: pd.DataFrame) -> list[Item]:
    """Items from an ``open_alerts`` frame."""
    out = []
    for r in frame.to_dict("records"):
        score = r["score"]
        out.append(Item(alert_id=int(r["alert_id"]), model=r["model"], finding=r["finding"], subject=r["subject"],
                        severity=r["severity"], score=None if score is None or not math.isfinite(score) else float(score),
                        title=r["title"], action=r["action"], day=r["day"], first_seen=r["first_seen"], last_seen=r["last_seen"],
                        episode=int(r["episode"]), evidence=r["evidence"] if isinstance(r["evidence"], dict) else {}))  # fmt: skip
    return out


def ranked(its: Sequence[Item]) -> list[Item]:
    """As the daily report ranks findings: score (root causes first), then severity."""
    return sorted(its, key=lambda i: (-(i.score or 0.0), -SEVERITY_LEVEL.get(i.severity, 0), i.model, i.day, i.finding, i.subject))


def absolute(path: str, base_url: str | None) -> str:
    """``path`` (``/features?...``) on the dashboard at ``base_url``; unchanged without one."""
    if not base_url or "://" in path:
        return path
    return base_url.rstrip("/") + "/" + path.lstrip("/")


def alert_url(item: Item, base_url: str | None) -> str:
    return absolute("/alerts?" + urlencode({"model": item.model, "alert": item.alert_id}), base_url)


def links(item: Item, base_url: str | None) -> list[dict[str, str]]:
    """The alert's own link, then its evidence links, all absolute when ``base_url`` is set."""
    out = [{"label": f"alert #{item.alert_id}", "url": alert_url(item, base_url)}]
    for lk in item.evidence.get("links", []) or []:
        if isinstance(lk, dict) and lk.get("url"):
            out.append({"label": str(lk.get("label", lk["url"])), "url": absolute(str(lk["url"]), base_url)})
    return out


def _num(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.4g}" if isinstance(x, (int, float)) else str(x)


def numbers(item: Item, n: int = MAX_NUMBERS) -> list[str]:
    """The top evidence numbers: ``subject statistic value (usual R, threshold T)``."""
    out = []
    for s in (item.evidence.get("symptoms") or [])[:n]:
        if not isinstance(s, dict):
            continue
        out.append(f"{s.get('subject')} {s.get('statistic')} {_num(s.get('value'))} "
                   f"(usual {_num(s.get('reference'))}, threshold {_num(s.get('threshold'))})")  # fmt: skip
    return out


# ------------------------------------------------------------------------------------- payloads


def _mrkdwn(text: Any) -> str:
    # Slack's mrkdwn needs only these three escaped
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack(item: Item, base_url: str | None) -> dict[str, Any]:
    """A Slack incoming-webhook message: title, severity, model, day, the top evidence numbers and
    buttons into the dashboard (buttons need absolute URLs: only with ``base_url``)."""
    head = f"{item.severity.upper()} · {item.finding} · {item.subject}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": head[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _mrkdwn(item.title or head)},
         "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{_mrkdwn(v)}"} for k, v in
                    (("Severity", item.severity), ("Model", item.model), ("Day", item.day), ("Score", _num(item.score)))]},
    ]  # fmt: skip
    nums = numbers(item)
    if nums:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "*Evidence*\n" + "\n".join(f"• {_mrkdwn(x)}" for x in nums)}})
    if item.action:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"*Action:* {_mrkdwn(item.action)}"}]})
    if base_url:
        buttons = [{"type": "button", "text": {"type": "plain_text", "text": ("Open in ctrlens" if i == 0 else lk["label"])[:75]},
                    "url": lk["url"]} for i, lk in enumerate(links(item, base_url)[:5])]  # fmt: skip
        blocks.append({"type": "actions", "elements": buttons})
    text = f"{item.severity.upper()} {item.model} {item.day}: {item.finding} {item.subject} -- {item.title or ''}".strip()
    return {"text": text[:3000], "blocks": blocks}


def json_doc(its: Sequence[Item], base_url: str | None, channel: str) -> dict[str, Any]:
    """The alert rows as stored (``evidence`` parsed), each with its dashboard ``url`` and ``links``."""
    rows = []
    for i in its:
        r = i.as_row()
        r["url"] = alert_url(i, base_url)
        r["links"] = links(i, base_url)
        rows.append(r)
    return {"source": "ctrlens", "channel": channel, "alerts": rows}


def payload(channel: Channel, item: Item, base_url: str | None) -> bytes:
    """The webhook body / command stdin for one alert (UTF-8 JSON)."""
    doc = slack(item, base_url) if channel.format == "slack" else json_doc([item], base_url, channel.name)
    return json.dumps(jsonable(doc), ensure_ascii=False, allow_nan=False, default=str).encode("utf-8")


def digest(channel: Channel, its: Sequence[Item], base_url: str | None, reports: Sequence[Path] = ()) -> EmailMessage:
    """One e-mail for the run: the alerts ranked as in the daily report, the reports attached
    (``attach_reports``) or named."""
    its = ranked(its)
    by_sev = {s: sum(1 for i in its if i.severity == s) for s in ("critical", "warning", "info")}
    counts = ", ".join(f"{n} {s}" for s, n in by_sev.items() if n)
    models = sorted({i.model for i in its})
    msg = EmailMessage()
    msg["Subject"] = f"{channel.subject_prefix} {len(its)} new alert{'s' if len(its) != 1 else ''} ({counts}): {', '.join(models)}"[:250]
    msg["From"] = channel.sender or ""
    msg["To"] = ", ".join(channel.to)
    lines = [f"ctrlens found {len(its)} new alert{'s' if len(its) != 1 else ''} ({counts}), most important first.", ""]
    for n, i in enumerate(its, 1):
        lines.append(f"{n}. {i.severity.upper()}  {i.model}  {i.day}  {i.finding} · {i.subject}  (score {_num(i.score)})")
        if i.title:
            lines.append(f"   {i.title}")
        for x in numbers(i):
            lines.append(f"   - {x}")
        if i.action:
            lines.append(f"   Action: {i.action}")
        lines.append(f"   Open: {alert_url(i, base_url)}")
        lines.append("")
    reports = [Path(p) for p in reports if Path(p).is_file()]
    if reports and not channel.attach_reports:
        lines += ["Daily reports:", *[f"  {p}" for p in reports], ""]
    if not base_url:
        lines.append("(links are dashboard paths: set notify.base_url in the nightly configuration for clickable links)")
    msg.set_content("\n".join(lines))
    if channel.attach_reports:
        for p in reports:
            sub = "html" if p.suffix == ".html" else "markdown"
            msg.add_attachment(p.read_text(encoding="utf-8"), subtype=sub, filename=f"{p.parent.name}-{p.name}")
    return msg


__all__ = ["Item", "absolute", "alert_url", "digest", "items", "json_doc", "links", "numbers", "payload", "ranked", "slack"]

"""Summaries and descriptions of alerts, in English and Vietnamese, chosen per receiver.

A template is a Python format string over the alert's labels and annotations
(``{entity}``, ``{observed}``, ``{threshold}``, ``{window_s}``, ``{expected}`` ...); a
missing field renders as ``?`` rather than failing. English uses the detection's own text
unless a template overrides it; Vietnamese has a template per detection kind and a
generic one. Sites can override or add templates per language in the config.

Examples
--------
>>> t = Templates()
>>> labels = {"alertname": "ssh_brute_force", "entity": "203.0.113.7", "feed": "security"}
>>> ann = {"summary": "SSH brute force from 203.0.113.7", "observed": "42",
...        "threshold": "5", "window_s": "600", "description": "42 failures"}
>>> t.render("en", labels, ann)["summary"]
'SSH brute force from 203.0.113.7'
>>> t.render("vi", labels, ann)["summary"]
'Tấn công dò mật khẩu SSH từ 203.0.113.7'
>>> t.title("vi", "firing", 2, "ssh_brute_force")
'[ĐANG CẢNH BÁO:2] ssh_brute_force'
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

LANGUAGES = ("en", "vi")

#: Built-in templates: language -> alertname ("*" = any) -> field -> format string.
BUILTIN: dict[str, dict[str, dict[str, str]]] = {
    "en": {
        "*": {
            "summary": "{alertname} on {entity}",
            "description": "{alertname} on {entity}: observed {observed} "
            "(threshold {threshold}) over {window_s} s",
        },
    },
    "vi": {
        "*": {
            "summary": "{alertname} tại {entity}",
            "description": "{alertname} tại {entity}: giá trị đo được {observed} "
            "(ngưỡng {threshold}) trong {window_s} giây",
        },
        "ssh_brute_force": {
            "summary": "Tấn công dò mật khẩu SSH từ {entity}",
            "description": "{observed} lần xác thực thất bại từ {entity} trong {window_s} giây "
            "(ngưỡng {threshold})",
        },
        "ssh_user_enumeration": {
            "summary": "Dò tìm tên người dùng SSH từ {entity}",
            "description": "{observed} tên người dùng khác nhau được thử từ {entity} trong "
            "{window_s} giây (ngưỡng {threshold})",
        },
        "ssh_success_after_failures": {
            "summary": "Đăng nhập SSH thành công sau nhiều lần thất bại từ {entity}",
            "description": "Đăng nhập thành công từ {entity} sau {observed} lần thất bại trong "
            "{window_s} giây (ngưỡng {threshold}): có thể đã bị xâm nhập",
        },
        "port_scan": {
            "summary": "Quét cổng từ {entity}",
            "description": "{entity} thăm dò không có phản hồi ({scan}): {observed} "
            "(ngưỡng {threshold}) trong {window_s} giây; các kiểu quét: {evidence_scans}",
        },
        "web_scan": {
            "summary": "Quét web từ {entity}",
            "description": "{observed} yêu cầu đáng ngờ (404 hoặc nhiều đường dẫn) từ {entity} "
            "trong {window_s} giây (ngưỡng {threshold})",
        },
        "volume_anomaly": {
            "summary": "Lưu lượng bất thường: {entity}",
            "description": "Giá trị {observed} của {entity}, kỳ vọng {expected} "
            "(khoảng {lower} đến {upper}), độ lệch vượt ngưỡng {threshold}",
        },
    },
}

_TITLES = {
    "en": {"firing": "FIRING", "resolved": "RESOLVED"},
    "vi": {"firing": "ĐANG CẢNH BÁO", "resolved": "ĐÃ KHẮC PHỤC"},
}

_REASONS = {
    "en": {
        "first_notification": "first notification",
        "new_alerts": "new alerts",
        "some_resolved": "some resolved",
        "all_resolved": "all resolved",
        "repeat": "repeat",
    },
    "vi": {
        "first_notification": "thông báo đầu tiên",
        "new_alerts": "có cảnh báo mới",
        "some_resolved": "một số đã khắc phục",
        "all_resolved": "tất cả đã khắc phục",
        "repeat": "nhắc lại",
    },
}


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


class Templates:
    """Render summary and description for one language.

    Parameters
    ----------
    overrides
        ``{language: {alertname or "*": {"summary": ..., "description": ...}}}``; merged
        over the built-in templates.
    """

    def __init__(self, overrides: Mapping[str, Mapping[str, Mapping[str, str]]] | None = None):
        self.overrides = overrides
        merged: dict[str, dict[str, dict[str, str]]] = {
            lang: {k: dict(v) for k, v in per.items()} for lang, per in BUILTIN.items()
        }
        for lang, per in (overrides or {}).items():
            for name, fields in per.items():
                merged.setdefault(lang, {}).setdefault(name, {}).update(fields)
        self._t = merged
        self._custom_en = {
            name for name in (overrides or {}).get("en", {})
        }  # English keeps the detection's own text unless overridden
        self._fmt = string.Formatter()

    def render(
        self, language: str, labels: Mapping[str, str], annotations: Mapping[str, str]
    ) -> dict[str, str]:
        """Annotations with ``summary`` and ``description`` in ``language``."""
        out = dict(annotations)
        name = labels.get("alertname", "")
        if language == "en" and name not in self._custom_en and "summary" in annotations:
            return out
        per = self._t.get(language) or self._t["en"]
        fields = {**per.get("*", {}), **per.get(name, {})}
        values = _Missing({**annotations, **labels})
        for key in ("summary", "description"):
            tmpl = fields.get(key)
            if tmpl is None:
                continue
            try:
                out[key] = self._fmt.vformat(tmpl, (), values)
            except (ValueError, IndexError, AttributeError, KeyError):
                out[key] = tmpl  # a broken site template shows as written, never crashes
        return out

    @staticmethod
    def title(language: str, status: str, n: int, name: str) -> str:
        """``[FIRING:2] name`` in the receiver's language."""
        word = _TITLES.get(language, _TITLES["en"]).get(status, status.upper())
        return f"[{word}:{n}] {name}"

    @staticmethod
    def reason(language: str, reason: str) -> str:
        """The notification reason in words."""
        return _REASONS.get(language, _REASONS["en"]).get(reason, reason)

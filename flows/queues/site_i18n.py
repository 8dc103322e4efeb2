"""Words and number formats of the public scorecard site (flows/queues/site.py).

Vietnamese is the default language (the district publishes in it); English is the other.
Numbers follow each language's convention: Vietnamese writes ``1.954`` and ``88,2``,
English ``1,954`` and ``88.2``.

Examples
--------
>>> fmt_int(1954, "vi"), fmt_int(1954, "en")
('1.954', '1,954')
>>> fmt_dec(88.24, "vi"), fmt_dec(88.24, "en"), fmt_dec(None, "vi")
('88,2', '88.2', '—')
>>> T["vi"]["on_time"]
'Đúng hạn'
"""

from __future__ import annotations

LANGS = ("vi", "en")
DASH = "—"

T: dict[str, dict[str, str]] = {
    "vi": {
        "title": "Bảng đánh giá giải quyết thủ tục hành chính",
        "subtitle": "Số liệu công khai về thời gian giải quyết hồ sơ của các cơ quan",
        "period": "Kỳ báo cáo",
        "from_to": "từ {start} đến hết {last}",
        "prev_period": "Kỳ trước (cùng độ dài)",
        "as_of": "Tồn đọng và quá hạn tính đến",
        "timezone": "Múi giờ",
        "agencies": "Các cơ quan",
        "agency": "Cơ quan",
        "service": "Dịch vụ",
        "all_services": "Tất cả dịch vụ",
        "received": "Tiếp nhận",
        "completed": "Đã giải quyết",
        "on_time": "Đúng hạn",
        "on_time_pct": "Đúng hạn (%)",
        "overdue": "Quá hạn hiện tại",
        "backlog": "Tồn đọng",
        "median": "Trung vị thời gian xử lý (giờ)",
        "p90": "Phân vị 90 thời gian xử lý (giờ)",
        "trend": "So với kỳ trước",
        "no_deadline": "không có hạn",
        "caption_index": "Kết quả giải quyết theo cơ quan, {period}",
        "caption_agency": "Kết quả giải quyết theo dịch vụ của {agency}, {period}",
        "chart_on_time": "Tỷ lệ giải quyết đúng hạn theo cơ quan (%)",
        "chart_on_time_services": "Tỷ lệ giải quyết đúng hạn theo dịch vụ (%)",
        "chart_backlog": "Hồ sơ tồn đọng theo cơ quan",
        "back": "← Tất cả cơ quan",
        "downloads": "Tải số liệu",
        "json": "JSON",
        "csv": "CSV",
        "notes": "Giải thích",
        "note_received": "Tiếp nhận: số hồ sơ nộp trong kỳ.",
        "note_completed": "Đã giải quyết: số hồ sơ được giải quyết xong trong kỳ.",
        "note_on_time": (
            "Đúng hạn: tỷ lệ hồ sơ giải quyết xong trước hạn, trong số hồ sơ có hạn "
            "giải quyết; “không có hạn” nghĩa là không biết hạn nên không tính tỷ lệ."
        ),
        "note_backlog": (
            "Tồn đọng: hồ sơ đã nhận nhưng chưa giải quyết xong tại thời điểm cuối kỳ; "
            "Quá hạn hiện tại: trong số đó, hồ sơ đã quá hạn."
        ),
        "note_time": (
            "Thời gian xử lý: từ lúc tiếp nhận đến lúc giải quyết xong, tính bằng giờ "
            "(trung vị và phân vị 90)."
        ),
        "note_trend": (
            "So với kỳ trước: thay đổi số hồ sơ tiếp nhận (%) và tỷ lệ đúng hạn (điểm %) "
            "so với kỳ liền trước có cùng độ dài."
        ),
        "note_privacy": "Trang này không hiển thị mã hồ sơ hay thông tin cá nhân nào.",
        "points": "điểm",
        "up": "tăng",
        "down": "giảm",
        "same": "không đổi",
        "new": "mới",
        "generated": "Tạo lúc",
        "of_deadline": "{n} hồ sơ có hạn",
        "skip": "Bỏ qua, đến bảng số liệu",
        "services_count": "{n} dịch vụ",
    },
    "en": {
        "title": "Public service scorecard",
        "subtitle": "Open figures on how long each agency takes to handle requests",
        "period": "Period",
        "from_to": "{start} to {last} inclusive",
        "prev_period": "Previous period (same length)",
        "as_of": "Backlog and overdue as of",
        "timezone": "Time zone",
        "agencies": "Agencies",
        "agency": "Agency",
        "service": "Service",
        "all_services": "All services",
        "received": "Received",
        "completed": "Completed",
        "on_time": "On time",
        "on_time_pct": "On time (%)",
        "overdue": "Overdue now",
        "backlog": "Backlog",
        "median": "Median processing time (h)",
        "p90": "90th percentile processing time (h)",
        "trend": "Against previous period",
        "no_deadline": "no deadline",
        "caption_index": "Results by agency, {period}",
        "caption_agency": "Results of {agency} by service, {period}",
        "chart_on_time": "Share of requests completed on time, by agency (%)",
        "chart_on_time_services": "Share of requests completed on time, by service (%)",
        "chart_backlog": "Open requests (backlog) by agency",
        "back": "← All agencies",
        "downloads": "Download the figures",
        "json": "JSON",
        "csv": "CSV",
        "notes": "Notes",
        "note_received": "Received: requests filed in the period.",
        "note_completed": "Completed: requests completed in the period.",
        "note_on_time": (
            "On time: share of completed requests that met their deadline, among those "
            "with a known deadline; “no deadline” means none is known, so no share is given."
        ),
        "note_backlog": (
            "Backlog: requests received but not completed at the end of the period; "
            "Overdue now: those of them past their deadline."
        ),
        "note_time": (
            "Processing time: from receipt to completion, in hours (median and 90th percentile)."
        ),
        "note_trend": (
            "Against previous period: change in requests received (%) and in the on-time "
            "share (percentage points) against the period just before, of the same length."
        ),
        "note_privacy": "No request id or personal information is shown on this site.",
        "points": "points",
        "up": "up",
        "down": "down",
        "same": "unchanged",
        "new": "new",
        "generated": "Generated",
        "of_deadline": "{n} with a deadline",
        "skip": "Skip to the table",
        "services_count": "{n} services",
    },
}


def _seps(lang: str) -> tuple[str, str]:
    """(thousands, decimal) separators of ``lang``."""
    return (".", ",") if lang == "vi" else (",", ".")


def fmt_int(n: int | None, lang: str) -> str:
    """A whole number with the language's thousands separator."""
    if n is None:
        return DASH
    thousands, _ = _seps(lang)
    return f"{n:,}".replace(",", thousands)


def fmt_dec(x: float | None, lang: str, digits: int = 1) -> str:
    """A decimal number rounded to ``digits`` places, in the language's notation."""
    if x is None:
        return DASH
    thousands, dec = _seps(lang)
    s = f"{x:,.{digits}f}"
    return s.replace(",", "\0").replace(".", dec).replace("\0", thousands)


def fmt_signed(x: float, lang: str, digits: int = 1) -> str:
    """``x`` with an explicit sign (a true minus sign, U+2212, for negatives)."""
    body = fmt_dec(abs(x), lang, digits)
    return ("+" if x > 0 else "\u2212" if x < 0 else "±") + body

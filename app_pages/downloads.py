"""Download buttons that never fail silently.

A button's bytes are made while the page is drawn, so a failure is a sentence on the page (not a
server log line after a click). They are served as a stored file whose address depends only on the
bytes (Streamlit's media store), so the same download keeps the same address across reruns, and a
click does not rerun the page (on_click="ignore"): a browser that still holds an older copy of a
button gets the file, and every button works in any order. (A callable `data=` would register a
new one-off id on every rerun and drop the old one, so a click that raced a redraw found nothing.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .errors import safe_message


@dataclass(frozen=True)
class Download:
    key: str  # widget key
    label: str
    file_name: str
    mime: str
    make: Callable[[], bytes]  # builds the bytes (cache it: it runs on every draw)
    icon: str = ":material/download:"


def offer(where, d: Download) -> bool:
    """Draw one download button in `where`, or the sentence saying why it could not be made."""
    try:
        payload = d.make()
    except Exception as e:  # noqa: BLE001 - whatever failed is reported, never swallowed
        where.error(f"{d.file_name} could not be made: {safe_message(e)}")
        return False
    where.download_button(
        d.label, data=payload, file_name=d.file_name, mime=d.mime, key=d.key, icon=d.icon,
        on_click="ignore",
    )
    return True

"""The sentence the browser sees for an exception: never a traceback, never a server path."""

from __future__ import annotations

import os
import re

import streamlit as st

# an absolute path in a message: '/' then path characters up to a space, quote or bracket
_PATH = re.compile(r"(?:(?<=folder:)|(?<![\w.:/]))/[^\s'\"()\[\],;]+")


def safe_message(e: Exception) -> str:
    """The text of an error for the browser: a ValueError's sentence, else a generic one, with every
    absolute server path cut to its last part (a file name says enough; the folders are private)."""
    text = str(e) if isinstance(e, ValueError) else f"Something went wrong ({type(e).__name__})."
    return _PATH.sub(lambda m: os.path.basename(m.group(0).rstrip("/.")) or "/", text)


def show_error(e: Exception, where=st) -> None:
    """One clear sentence for errors a user can cause."""
    where.error(safe_message(e))

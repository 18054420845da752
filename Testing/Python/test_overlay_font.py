"""Overlay labels in any script: the bundled DejaVu Sans draws real glyphs, never 'missing glyph' boxes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from DeepDRRSlicerLib import landmarks
from DeepDRRSlicerLib.landmarks import OverlayWarning, ProjectedLandmark, draw_overlay

LABELS = ["Tête fémorale", "Δ angle α/β", "Позвонок L5", "Ünterkiefer ø", "→ ASIS ✓ ±2 mm", "עצם", "Ωμέγα"]


def _glyph(font, character):
    mask = font.getmask(character)
    return bytes(mask), mask.size


def test_the_overlay_font_has_a_glyph_for_every_label_character():
    font = landmarks._font(24, LABELS)
    box = _glyph(font, "\U0010fffd")  # a code point no font maps: the 'missing glyph' box
    for character in set("".join(LABELS)) - {" "}:
        assert _glyph(font, character) != box, f"{character!r} would be drawn as a box"
    assert font.getname()[0] == "DejaVu Sans"


def test_unicode_labels_are_drawn_without_warnings(tmp_path):
    image = np.linspace(0.0, 1.0, 128 * 128).reshape(128, 128)
    marks = [ProjectedLandmark(label, np.zeros(3), 10.0 + 15 * n, 10.0 + 15 * n, 500.0, True)
             for n, label in enumerate(LABELS)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        draw_overlay(image, marks, tmp_path / "overlay.png", title="primary")
    assert (tmp_path / "overlay.png").stat().st_size > 1000


def test_characters_no_font_has_are_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(landmarks, "_FALLBACK_FONTS", ())
    marks = [ProjectedLandmark("股骨头", np.zeros(3), 5.0, 5.0, 500.0, True)]
    with pytest.warns(OverlayWarning, match="股骨头|头股骨|No font found"):
        draw_overlay(np.zeros((32, 32)), marks, tmp_path / "overlay.png")

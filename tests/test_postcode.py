from __future__ import annotations

import pytest

from engine.members.postcode import normalise_postcode


@pytest.mark.parametrize(
    ("raw", "tidy"),
    [
        ("sw1a0aa", "SW1A 0AA"),
        ("  SW1A   0AA ", "SW1A 0AA"),
        ("ec1a1bb", "EC1A 1BB"),
        ("m11ae", "M1 1AE"),
        ("B33 8TH", "B33 8TH"),
        ("cr2 6xh", "CR2 6XH"),
        ("DN55 1PT", "DN55 1PT"),
        ("bt7 1nn", "BT7 1NN"),
        ("GIR 0AA", "GIR 0AA"),
    ],
)
def test_postcode_is_tidied(raw: str, tidy: str):
    assert normalise_postcode(raw) == tidy


@pytest.mark.parametrize("raw", ["", "12345", "SW1A", "QX1 1AA", "SW1A 0CA", "AA1 1AAA", "W1A-0AX"])
def test_not_a_postcode(raw: str):
    assert normalise_postcode(raw) is None

"""The pure rules of images at the edge (edge.cache.images) and their configuration
(edge.config.images): negotiation by Accept, widths by ?w= and Client Hints, the class and
fields of a variant."""

from __future__ import annotations

from pathlib import Path

import pytest
from multidict import CIMultiDict

from edge.cache import images
from edge.config.images import ImageRule
from edge.config.settings import ConfigError, load_config
from edge.http.validators import variant_etag

CHROME = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
FIREFOX = "image/avif,image/webp,*/*"
SAFARI_16 = "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,*/*;q=0.5"
OFFERED = ("avif", "webp")


@pytest.mark.parametrize(
    ("accept", "original", "expected"),
    [
        (CHROME, "jpeg", "avif"),
        (FIREFOX, "jpeg", "avif"),
        (SAFARI_16, "jpeg", "avif"),  # equal weights: the edge's order
        ("image/webp,*/*", "jpeg", "webp"),
        ("image/avif;q=0.5, image/webp", "jpeg", "webp"),  # the higher weight
        ("image/avif;q=0, image/webp", "jpeg", "webp"),  # q=0 refuses
        ("image/avif;q=0, image/webp;q=0, */*", "jpeg", None),
        ("*/*", "jpeg", None),  # curl, wget: the original
        ("image/*", "jpeg", None),  # a wildcard is no promise to decode AVIF
        (None, "jpeg", None),  # no Accept
        ("", "jpeg", None),
        ("image/jpeg, image/avif;q=0.5", "jpeg", None),  # prefers the original's type
        ("image/avif;q=0.5, image/*;q=0.9", "png", None),
        ("image/avif, image/webp", "webp", "avif"),  # a WebP original goes to AVIF
        ("image/webp", "webp", None),  # ... not to itself
        ("image/avif;q=nan, image/webp;q=2", "jpeg", None),  # bad weights count as 0
        ("IMAGE/AVIF", "jpeg", "avif"),  # media types are case-insensitive
    ],
)
def test_format_from_accept(accept: str | None, original: str, expected: str | None) -> None:
    assert images.choose_format(accept, OFFERED, original) == expected


def test_only_the_formats_offered() -> None:
    assert images.choose_format(CHROME, ("webp",), "jpeg") == "webp"
    assert images.choose_format(CHROME, (), "jpeg") is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [("w=640", 640), ("a=1&w=1280", 1280), ("w=1&w=700", 700), ("a=1", None), ("", None)],
)
def test_width_param(query: str, expected: int | None) -> None:
    assert images.width_param(query) == expected


@pytest.mark.parametrize("value", ["abc", "-5", "0", "1e3", "99999", "12.5", " 640"])
def test_a_bad_width_param_is_refused_with_a_message(value: str) -> None:
    with pytest.raises(images.BadWidth, match="w must be a width in pixels"):
        images.width_param(f"w={value}")


@pytest.mark.parametrize(
    ("hints", "expected"),
    [
        ({"Sec-CH-Viewport-Width": "1280", "Sec-CH-DPR": "1"}, 1280),
        ({"Sec-CH-Viewport-Width": "1280", "Sec-CH-DPR": "2"}, 2560),
        ({"Sec-CH-Viewport-Width": "375", "Sec-CH-DPR": "2.625"}, 985),
        ({"Sec-CH-Viewport-Width": "1280"}, 1280),  # no DPR: 1
        ({"Sec-CH-Width": "900", "Sec-CH-Viewport-Width": "1280"}, 900),  # the image's own
        ({"Width": "500"}, 500),  # the legacy names
        ({"Viewport-Width": "800", "DPR": "1.5"}, 1200),
        ({"Sec-CH-DPR": "2"}, None),  # a DPR alone says no width
        ({"Sec-CH-Viewport-Width": "wide"}, None),
        ({"Sec-CH-Viewport-Width": "-3"}, None),
        ({"Sec-CH-Viewport-Width": "inf"}, None),
        ({}, None),
    ],
)
def test_width_from_client_hints(hints: dict[str, str], expected: int | None) -> None:
    assert images.hinted_width(CIMultiDict(hints)) == expected


@pytest.mark.parametrize(
    ("wanted", "original_width", "expected"),
    [
        (None, 3200, None),
        (600, 3200, 640),  # up to the next configured width
        (640, 3200, 640),
        (641, 3200, 960),
        (1280, 3200, 1280),
        (2561, 3200, None),  # wider than every width: the original's
        (1280, 1000, None),  # never upscaled: the original is narrower
        (900, 961, 960),
        (900, 960, None),  # the bucket is the original's own width: nothing to do
    ],
)
def test_width_buckets(wanted: int | None, original_width: int, expected: int | None) -> None:
    widths = (640, 960, 1280, 1920, 2560)
    assert images.bucket(wanted, widths, original_width) == expected


def test_the_class_names_format_and_width_never_the_raw_fields() -> None:
    widths = (640, 1280)
    assert images.choose(CHROME, 1200, OFFERED, widths, "jpeg", 3200).name == "avif-1280"
    assert images.choose(CHROME, None, OFFERED, widths, "jpeg", 3200).name == "avif"
    assert images.choose("*/*", None, OFFERED, widths, "jpeg", 3200).name == "original"
    assert images.choose("*/*", 500, OFFERED, widths, "jpeg", 3200).name == "jpeg-640"
    assert images.choose("*/*", 500, OFFERED, widths, "gif", 3200).name == "original"
    # Two different Accept values, one class: one variant.
    a = images.choose(CHROME, 1100, OFFERED, widths, "jpeg", 3200)
    b = images.choose(FIREFOX, 1280, OFFERED, widths, "jpeg", 3200)
    assert a == b


def test_variant_fields() -> None:
    fields = [
        ("Content-Type", "image/jpeg"),
        ("Content-Length", "5000614"),
        ("ETag", '"6b0f04d4-4c4e26"'),
        ("Vary", "Origin"),
        ("Cache-Control", "max-age=3600"),
    ]
    choice = images.Choice("avif", 1280, True)
    out = images.variant_fields(fields, choice, images.vary_names(True))
    assert ("Content-Type", "image/avif") in out
    assert ("ETag", '"6b0f04d4-4c4e26-avif-1280"') in out
    assert not any(k == "Content-Length" for k, _ in out)
    assert ("Vary", "Accept, Sec-CH-Width, Sec-CH-Viewport-Width, Sec-CH-DPR") in out
    assert ("Vary", "Origin") in out
    assert variant_etag('W/"x"', "webp") == 'W/"x-webp"'


def test_vary_is_added_once() -> None:
    fields = [("Vary", "accept, Origin")]
    assert images.with_vary(fields, ("Accept",)) == fields
    assert images.with_vary([("Vary", "*")], ("Accept",)) == [("Vary", "*")]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ([("Content-Type", "image/jpeg")], "jpeg"),
        ([("Content-Type", "image/png; charset=binary")], "png"),
        ([("Content-Type", "image/svg+xml")], None),  # not a raster image
        ([("Content-Type", "text/html")], None),
        ([("Content-Type", "image/jpeg"), ("Cache-Control", "max-age=9, no-transform")], None),
        ([("Content-Type", "image/jpeg"), ("Content-Encoding", "gzip")], None),
        ([], None),
    ],
)
def test_what_is_converted(fields: list[tuple[str, str]], expected: str | None) -> None:
    assert images.source_format(fields) == expected


def test_w_is_no_part_of_the_key() -> None:
    assert images.strip_width("/5mo.jpg?w=640") == "/5mo.jpg"
    assert images.strip_width("/a.jpg?v=2&w=640") == "/a.jpg?v=2"
    assert images.strip_width("/a.jpg?v=2") == "/a.jpg?v=2"
    assert images.strip_width("/a.jpg?width=2") == "/a.jpg?width=2"


def test_rule_by_longest_prefix(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(
        "images:\n  rules:\n    - prefix: /\n    - prefix: /thumbs/\n"
        "      formats: [webp]\n      widths: [200, 100]\n      quality: {webp: 60}\n"
    )
    settings = load_config(cfg).images
    assert settings.enabled
    thumbs = settings.rule_for("/thumbs/a.jpg")
    assert thumbs is not None and thumbs.formats == ("webp",) and thumbs.widths == (100, 200)
    assert thumbs.quality_of("webp") == 60
    assert settings.rule_for("/a.jpg") == ImageRule()


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("images: {enabled: yes please}", "images.enabled"),
        ("images: {colour: red}", "images.colour"),
        ("images: {rules: [{formats: [jxl]}]}", "images.rules[0].formats[0]"),
        ("images: {rules: [{widths: [0]}]}", "images.rules[0].widths[0]"),
        ("images: {rules: [{quality: {avif: 101}}]}", "images.rules[0].quality.avif"),
        ("images: {rules: [{prefix: img}]}", "images.rules[0].prefix"),
        ("images: {worker_memory: 1m}", "images.worker_memory"),
        ("images: {time_limit: 1h}", "images.time_limit"),
        ("images: {workers: 0}", "images.workers"),
    ],
)
def test_config_errors_name_the_key_and_the_file(tmp_path: Path, text: str, where: str) -> None:
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(text + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert str(cfg) in str(err.value) and where in str(err.value)


def test_the_shop_config_turns_images_on() -> None:
    root = Path(__file__).resolve().parents[2]
    settings = load_config(root / "config" / "edge.yaml").images
    assert settings.enabled and settings.rule_for("/5mo.jpg") is not None

"""The tiles of the element map: the settings refused where they are made, the tiling arithmetic worked by hand, and
the tile limit applied before any tile is made."""

from __future__ import annotations

import numpy as np
import pytest

from heritage_cnn.base.checks import ConfigError
from heritage_cnn.cli.main import main
from heritage_cnn.inference import tiles as tiles_module
from heritage_cnn.inference.tiles import MAX_SCALES, MIN_STRIDE, MapConfig, Tile, plan, plan_tiles, tile_positions


def test_tile_positions_cover_the_axis_from_edge_to_edge() -> None:
    assert tile_positions(300, 100, 50) == [0, 50, 100, 150, 200]  # (300 - 100) / 50 = 4 steps
    assert tile_positions(100, 100, 50) == [0.0]  # one tile fills the axis
    assert tile_positions(80, 100, 50) == [0.0]
    # 4000 x 3000 reduced to 341 x 256: the smallest tiles (64 px, stride 32) need ceil(277 / 32) = 9 steps, each
    # 277 / 9 = 30.78 px (never more than the stride), the last tile ending on the edge
    xs = tile_positions(341, 64, 32)
    assert len(xs) == 10 and xs[0] == 0 and xs[-1] == pytest.approx(277)
    assert np.diff(xs) == pytest.approx(np.full(9, 277 / 9))


def test_plan_of_a_12_megapixel_photo_worked_by_hand() -> None:
    config = MapConfig()
    assert config.scales == (1.0, 0.71, 0.5, 0.35, 0.25)
    assert config.reduced_shorter(64) == 256  # the smallest tile, a quarter of the shorter side, becomes 64 px
    tiles = plan_tiles(341, 256, config)
    counts = [sum(t.scale == i for t in tiles) for i in range(5)]
    # sides 256, 181.76, 128, 89.6, 64 at steps of half a side: (2 x 1), (3 x 2), (5 x 3), (7 x 5), (10 x 7)
    assert counts == [2, 6, 15, 35, 70]
    assert min(t.side for t in tiles) == pytest.approx(64)  # never enlarged
    whole = [t for t in tiles if t.scale == 0]
    assert [(t.left, t.top, t.side) for t in whole] == [(0, 0, 256), (85, 0, 256)]
    # over the budget, the finest scales go first: 128 - 70 = 58 is still over 30, 58 - 35 = 23 is not
    assert len(plan_tiles(341, 256, MapConfig(max_tiles=30))) == 23


def test_plan_of_a_small_photo_keeps_only_tiles_of_at_least_64_px() -> None:
    tiles = plan_tiles(100, 80, MapConfig())  # 0.71 x 80 = 56.8 px: too small; only the whole height remains
    assert [(t.left, t.top, t.side) for t in tiles] == [(0, 0, 80), (20, 0, 80)]
    assert plan_tiles(100, 63, MapConfig()) == []


def test_config_refuses_bad_values() -> None:
    bad_values = ({"scales": ()}, {"scales": (0.0,)}, {"scales": (1.5,)}, {"stride": 0}, {"presence": float("nan")})
    for bad in (*bad_values, {"rule": "mean"}):
        with pytest.raises(ConfigError):
            MapConfig(**bad)


@pytest.mark.parametrize("stride", ["1e-300", "1e-6", "0.001", "0.01", "0.1"])
def test_a_stride_finer_than_a_cell_of_the_map_is_refused(stride: str, capsys: pytest.CaptureFixture[str]) -> None:
    # 1e-6 grew past 7.5 GB building tiles, 1e-300 ran for minutes, 0.001 and 0.01 dropped every scale but the
    # coarsest and said "no element found"; below an eighth of a tile a step adds tiles and no detail
    assert MIN_STRIDE == 1 / 8 and MapConfig(stride=MIN_STRIDE).stride == 0.125
    with pytest.raises(ConfigError, match=r"stride must be from 0\.125 to 1"):
        MapConfig(stride=float(stride))
    with pytest.raises(SystemExit) as info:
        main(["map", "x.jpg", "--stride", stride])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert info.value.code == 2 and last.startswith("heritage map: error: argument --stride: ") and stride in last


def test_scales_are_capped_in_number(capsys: pytest.CaptureFixture[str]) -> None:
    many = tuple(1 - i / 100 for i in range(MAX_SCALES + 1))  # each scale holds a plane of the map's grid
    with pytest.raises(ConfigError, match=f"at most {MAX_SCALES} different scales"):
        MapConfig(scales=many)
    assert len(MapConfig(scales=many[:MAX_SCALES] * 2).scales) == MAX_SCALES  # repeats are one scale
    with pytest.raises(SystemExit):
        main(["map", "x.jpg", "--scales", ",".join(map(str, many))])
    assert f"at most {MAX_SCALES} different scales" in capsys.readouterr().err


def test_the_plan_counts_tiles_before_making_them(monkeypatch: pytest.MonkeyPatch) -> None:
    made = []
    monkeypatch.setattr(tiles_module, "Tile", lambda *a: made.append(a) or Tile(*a))
    # a 62,500 x 64 strip at the finest stride: 7,806 tiles of its one scale, 2,048 of them made and kept
    planned = plan(62_500, 64, MapConfig(scales=(1.0,), stride=MIN_STRIDE))
    assert len(planned.tiles) == len(made) == 2048 and planned.thinned == 7806
    assert [t.left for t in planned.tiles[:2]] == [0.0, pytest.approx(62_436 / 7805 * 4)]  # spread evenly
    assert planned.note(2048) == "2048 of the 7806 tiles of scale 1 scored, spread evenly (the limit is 2048)"
    made.clear()
    planned = plan(341, 256, MapConfig(max_tiles=30))  # 2 + 6 + 15 made; 35 and 70 only counted
    assert len(made) == 23 and planned.dropped == (0.35, 0.25) and planned.needed == 128
    assert plan(341, 256, MapConfig()).note(2048) is None

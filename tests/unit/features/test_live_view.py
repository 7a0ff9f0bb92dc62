"""``vehicle_live_state`` in the platform's repository reads batch history plus the stream's tail."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
from nuro_ml import settings
from nuro_ml.etl.live_state import refresh_live_state
from nuro_ml.hooks.feast import FeastHook

from tests.unit.stream.tables import can_rows, telemetry_rows, write_batch_can, write_sink

FEATURES = ["vehicle_live_state:speed_mps", "vehicle_live_state:brake_pressure_bar"]


def t(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=UTC)


def test_the_live_view_materializes_and_joins_batch_days_and_the_stream_tail(sqlite_hook: FeastHook) -> None:
    out = settings.etl_output_dir()
    write_batch_can(out, [("veh-1", t(1, 8), 1.0), ("veh-2", t(1, 8), 2.0)])
    write_sink(
        out,
        "vehicle_can",
        # 12-01 rows the batch has since rewritten (its value wins), then the stream's tail.
        [can_rows([("veh-1", t(1, 8, 30), 10.0)]), can_rows([("veh-1", t(2, 9), 3.0)])],
    )
    write_sink(out, "telemetry", [telemetry_rows([("veh-2", t(2, 9, 10), 4.0)])])
    refresh_live_state(out)

    applied = sqlite_hook.apply().to_xcom()
    assert {"feature_view:vehicle_live_state", "data_source:vehicle_live_push"} <= set(applied["added"])
    report = sqlite_hook.materialize(start=t(1, 0), end=t(3, 0), feature_views=["vehicle_live_state"])
    view = report.views["vehicle_live_state"]
    assert view.path == "partitioned" and view.misses == 2  # one computation per day
    online = sqlite_hook.store.get_online_features(
        features=FEATURES, entity_rows=[{"vehicle_id": "veh-1"}, {"vehicle_id": "veh-2"}]
    ).to_dict()
    assert online["speed_mps"] == [3.0, 4.0] and online["brake_pressure_bar"] == [0.3, 0.4]

    entities = pd.DataFrame(
        {
            "vehicle_id": ["veh-1", "veh-1", "veh-2", "veh-2"],
            "event_timestamp": [t(1, 8, 45), t(2, 9, 5), t(1, 8, 30), t(2, 9, 15)],
        }
    )
    joined = (
        sqlite_hook.store.get_historical_features(entity_df=entities, features=FEATURES)
        .to_df()
        .sort_values(["vehicle_id", "event_timestamp"])
    )
    # veh-1 at 08:45 on 12-01: the batch's 1.0, not the stream's superseded 10.0.
    assert joined["speed_mps"].tolist() == [1.0, 3.0, 2.0, 4.0]

"""Which settings a session gets, by master and lifetime (no JVM started)."""

from __future__ import annotations

from typing import Any

import pytest
from nuro_ml.etl import spark_session


class _Builder:
    def __init__(self) -> None:
        self.settings: dict[str, str] = {}

    def appName(self, _name: str) -> _Builder:
        return self

    def master(self, _master: str) -> _Builder:
        return self

    def config(self, key: str, value: str) -> _Builder:
        self.settings[key] = value
        return self

    def getOrCreate(self) -> object:
        return object()


@pytest.fixture
def builder(monkeypatch: pytest.MonkeyPatch) -> _Builder:
    from pyspark.sql import SparkSession

    fake = _Builder()
    monkeypatch.setattr(SparkSession, "builder", fake)
    monkeypatch.setattr("nuro_ml.etl.datasource.register", lambda _spark: None)
    return fake


JIT = "spark.driver.extraJavaOptions"


def test_a_local_batch_session_uses_the_quick_jit(builder: _Builder) -> None:
    spark_session.build_session("local[2]")
    assert builder.settings[JIT] == "-XX:TieredStopAtLevel=1"
    assert builder.settings["spark.ui.enabled"] == "false"


@pytest.mark.parametrize(
    ("master", "kwargs"),
    [("local[2]", {"long_lived": True}), ("spark://head:7077", {}), (None, {})],
)
def test_long_lived_and_cluster_sessions_keep_the_jvms_defaults(
    builder: _Builder, master: str | None, kwargs: dict[str, Any]
) -> None:
    spark_session.build_session(master, **kwargs)
    assert JIT not in builder.settings


def test_the_callers_java_options_win(builder: _Builder) -> None:
    spark_session.build_session("local[2]", conf={JIT: "-Dlog4j.configurationFile=x.xml"})
    assert builder.settings[JIT] == "-Dlog4j.configurationFile=x.xml"

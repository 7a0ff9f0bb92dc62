"""Read a Feast feature repository's definitions and apply them, reporting what changed.

Feast's own ``parse_repo`` imports repo files as modules relative to the working directory
and caches them in ``sys.modules``, so a long-lived worker would keep paths computed at its
first import. Here every load executes the repo files afresh (under private module names),
which makes the source paths follow the current ``NURO_ML_DATA_DIR``.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nuro_ml.exceptions import FeatureStoreError
from nuro_ml.features.partitions import PartitionedSource
from nuro_ml.features.schema import check_columns, read_file_schema

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView
    from feast.repo_contents import RepoContents

log = logging.getLogger(__name__)

_load_counter = itertools.count()

#: Date partitions whose files are schema-checked on apply (the newest ones: where drift shows first).
APPLY_CHECK_PARTITIONS = 3


@dataclass(frozen=True)
class ApplyResult:
    """What an apply changed in the registry; each entry is ``<object type>:<name>``."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    #: ``<object type>:<name>`` -> names of the properties that differ, for changed objects.
    changed_properties: dict[str, list[str]] = field(default_factory=dict)

    def to_xcom(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "changed": self.changed,
            "removed": self.removed,
            "unchanged": len(self.unchanged),
            "changed_properties": self.changed_properties,
        }


def repo_files(repo_path: Path) -> list[Path]:
    """Python files of the repository (as Feast selects them, honouring ``.feastignore``)."""
    from feast.repo_operations import get_repo_files

    return get_repo_files(repo_path.resolve())


def load_repo_contents(repo_path: Path, project: str) -> RepoContents:
    """Execute the repository's files afresh and collect their Feast objects."""
    from feast import Entity, FeatureService, FeatureView, OnDemandFeatureView
    from feast.data_source import DataSource, KafkaSource, KinesisSource, PushSource
    from feast.feature_view import DUMMY_ENTITY
    from feast.labeling.label_view import LabelView
    from feast.permissions.permission import Permission
    from feast.project import Project
    from feast.repo_contents import RepoContents
    from feast.stream_feature_view import StreamFeatureView

    if not repo_path.is_dir():
        raise FeatureStoreError(f"Feature repository {repo_path} does not exist or is not a directory")
    contents = RepoContents(
        projects=[],
        data_sources=[],
        feature_views=[],
        on_demand_feature_views=[],
        stream_feature_views=[],
        label_views=[],
        entities=[],
        feature_services=[],
        permissions=[],
    )

    def add(bucket: list[Any], obj: Any) -> None:
        if not any(existing is obj for existing in bucket):
            bucket.append(obj)

    for path in repo_files(repo_path):
        module = _exec_file(path)
        for name in dir(module):
            obj = getattr(module, name)
            # Mirrors feast.repo_operations.parse_repo: sources nested in views and push/stream
            # sources are collected too, so the registry holds everything the views refer to.
            if isinstance(obj, DataSource):
                add(contents.data_sources, obj)
                if isinstance(obj, PushSource | KafkaSource | KinesisSource) and obj.batch_source:
                    add(contents.data_sources, obj.batch_source)
            if isinstance(obj, StreamFeatureView):
                add(contents.stream_feature_views, obj)
                for source in (obj.batch_source, obj.stream_source):
                    if source is not None:
                        add(contents.data_sources, source)
            elif isinstance(obj, FeatureView):
                add(contents.feature_views, obj)
                for source in (obj.batch_source, obj.stream_source):
                    if source is not None:
                        add(contents.data_sources, source)
            elif isinstance(obj, OnDemandFeatureView):
                add(contents.on_demand_feature_views, obj)
            elif isinstance(obj, LabelView):
                add(contents.label_views, obj)
                if obj.source is not None:
                    add(contents.data_sources, obj.source)
                    if isinstance(obj.source, PushSource) and obj.source.batch_source:
                        add(contents.data_sources, obj.source.batch_source)
            elif isinstance(obj, Entity):
                add(contents.entities, obj)
            elif isinstance(obj, FeatureService):
                add(contents.feature_services, obj)
            elif isinstance(obj, Permission):
                add(contents.permissions, obj)
            elif isinstance(obj, Project):
                add(contents.projects, obj)
    if not contents.projects:
        contents.projects.append(Project(name=project))
    elif [p.name for p in contents.projects] != [project]:
        raise FeatureStoreError(
            f"Feature repository {repo_path} declares project(s) {[p.name for p in contents.projects]}, "
            f"but its configuration (feature_store.yaml and the connection's overrides) names project "
            f"{project!r}"
        )
    contents.entities.append(DUMMY_ENTITY)
    return contents


def _exec_file(path: Path) -> Any:
    name = f"_nuro_feature_repo_{next(_load_counter)}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FeatureStoreError(f"Cannot load feature repository file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise FeatureStoreError(f"Feature repository file {path} failed to load: {exc!r}") from exc
    finally:
        # The module object stays alive through the Feast objects it created; the import cache
        # entry is only needed while the file executes (dataclasses and pickling look it up).
        sys.modules.pop(name, None)
    return module


def view_columns(view: FeatureView) -> tuple[dict[str, str | None], list[str]]:
    """Source column -> Feast value type name the view reads, and its timestamp columns."""
    source = view.batch_source
    assert source is not None
    reverse = {feature: column for column, feature in (source.field_mapping or {}).items()}
    expected: dict[str, str | None] = {}
    for feature in view.features:
        expected[reverse.get(feature.name, feature.name)] = feature.dtype.to_value_type().name
    for column in view.entity_columns:
        expected.setdefault(reverse.get(column.name, column.name), column.dtype.to_value_type().name)
    for join_key in view.join_keys:
        expected.setdefault(reverse.get(join_key, join_key), None)
    timestamps = [source.timestamp_field]
    if source.created_timestamp_column:
        timestamps.append(source.created_timestamp_column)
    return expected, [reverse.get(c, c) for c in timestamps]


def validate_sources(views: Iterable[FeatureView], repo_path: Path) -> None:
    """Check every file-sourced view against the newest partitions' file schemas."""
    from feast.infra.offline_stores.file_source import FileSource

    for view in views:
        source = view.batch_source
        if not isinstance(source, FileSource):
            continue
        expected, timestamps = view_columns(view)
        located = PartitionedSource.at(FileSource.get_uri_for_file_path(repo_path, source.path))
        files = located.newest_files(APPLY_CHECK_PARTITIONS)
        if not files:
            log.warning("Feature view %s: no data under %s yet; schema not checked", view.name, located.root)
        for path in files:
            check_columns(
                view=view.name,
                schema=read_file_schema(path),
                where=str(path),
                expected=expected,
                timestamps=timestamps,
            )


def apply_repo(store: FeatureStore, contents: RepoContents, repo_path: Path) -> ApplyResult:
    """Apply ``contents`` to the store's registry and infrastructure; objects not in it are removed."""
    from feast.diff.property_diff import TransitionType
    from feast.feature_view import DUMMY_ENTITY_NAME
    from feast.infra.registry.registry import FeastObjectType
    from feast.repo_operations import extract_objects_for_apply_delete

    from nuro_ml.features.registry_store import registry_update

    validate_sources(contents.feature_views, repo_path)
    try:
        # The plan diffs against the registry as it is now, not a copy cached before another
        # process's apply or materialization.
        with registry_update(store):
            registry_diff, infra_diff, new_infra = store.plan(contents)
            result = _summarize(registry_diff, TransitionType, FeastObjectType, DUMMY_ENTITY_NAME)
            if store._should_use_plan():
                store._apply_diffs(registry_diff, infra_diff, new_infra)
            else:
                to_apply, to_delete, _, _ = extract_objects_for_apply_delete(
                    store.project, store.registry, contents
                )
                store.apply(to_apply, objects_to_delete=to_delete, partial=False)
    except FeatureStoreError:
        raise
    except Exception as exc:
        raise FeatureStoreError(f"Applying feature repository {repo_path} failed: {exc}") from exc
    return result


def _summarize(registry_diff: Any, transition: Any, object_type: Any, dummy_entity: str) -> ApplyResult:
    result = ApplyResult()
    buckets: Mapping[Any, list[str]] = {
        transition.CREATE: result.added,
        transition.UPDATE: result.changed,
        transition.DELETE: result.removed,
        transition.UNCHANGED: result.unchanged,
    }
    for diff in registry_diff.feast_object_diffs:
        if diff.name == dummy_entity or diff.feast_object_type == object_type.PROJECT:
            continue
        label = f"{diff.feast_object_type.value.replace(' ', '_')}:{diff.name}"
        buckets[diff.transition_type].append(label)
        if diff.transition_type == transition.UPDATE:
            result.changed_properties[label] = sorted(
                {p.property_name for p in diff.feast_object_property_diffs}
            )
    for bucket in buckets.values():
        bucket.sort()
    return result

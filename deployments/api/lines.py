"""The lines' routes: what the service serves (``/v1/lines``, ``/v1/lines/{line}``), the version's exported
bundle for a camera PC (``/v1/lines/{line}/bundle``) and the two changes an administrator makes live: a
threshold and a classifier's severity rules (each a new version).

No ``from __future__ import annotations``: FastAPI reads the routes' annotations at import.
"""

import asyncio
import io
import tarfile
from typing import Literal

from fastapi import APIRouter, Query, Response

from lineguard.deployments.api.deps import CallerDep, LineDep, ServicesDep
from lineguard.deployments.api.errors import APIError
from lineguard.deployments.api.schemas import (
    AlarmChanged,
    AlarmUpdate,
    LineDetail,
    LineSummary,
    SeverityChanged,
    SeverityUpdate,
    ThresholdChanged,
    ThresholdUpdate,
)
from lineguard.deployments.api.security import allowed
from lineguard.deployments.keys import Principal
from lineguard.deployments.lines import LineEntry
from lineguard.registry.revisions import set_alarm, set_severity, set_threshold

router = APIRouter()


def summary(entry: LineEntry) -> LineSummary:
    card = entry.card
    return LineSummary(
        line=card.line,
        kind=card.kind.value,
        version=card.version,
        threshold=card.threshold.value,
        head=card.head.kind if card.head else None,
        backbone=card.backbone.name if card.backbone else None,
        image_auroc=card.metrics.image_auroc if card.metrics else None,
        created_at=card.created_at,
    )


def _actor(who: Principal | None) -> str | None:
    return None if who is None else f"key {who.id} ({who.name})"


@router.get("/v1/lines", response_model=list[LineSummary], summary="Every line with its version in service")
async def list_lines(services: ServicesDep, who: CallerDep) -> list[LineSummary]:
    return [summary(e) for e in await services.lines.all(lambda line: allowed(who, line))]


@router.get("/v1/lines/{line}", response_model=LineDetail, summary="One line: version, threshold, metrics")
async def line_detail(entry: LineDep, services: ServicesDep) -> LineDetail:
    card = entry.card
    versions = await asyncio.to_thread(services.store.versions, entry.line)
    bundles = await asyncio.to_thread(services.store.bundle_formats, entry.line, entry.version)
    calibration = card.calibration.model_dump(mode="json", exclude_none=True)
    for section in calibration.values():  # the summaries, not the thousands of scores behind them
        if isinstance(section, dict):
            section.pop("scores", None)
    refused = services.lines.refused.get(entry.line, (None, None))
    return LineDetail(
        **summary(entry).model_dump(),
        threshold_method=card.threshold.method,
        threshold_reference=card.threshold.reference,
        parent=card.parent,
        note=card.note,
        versions=versions,
        metrics=card.metrics.public() if card.metrics else None,
        calibration=calibration,
        data=card.data.model_dump(mode="json") if card.data else None,
        head_params=card.head.params if card.head else {},
        image_size=card.backbone.image_size if card.backbone else None,
        features=card.inputs.features if card.inputs else None,
        classes=card.classifier.classes if card.classifier else None,
        normal_class=card.classifier.normal_class if card.classifier else None,
        severity=card.classifier.severity if card.classifier else None,
        refused_version=refused[0],
        refused_reason=refused[1],
        bundles=bundles,
    )


@router.get(
    "/v1/lines/{line}/bundle",
    summary="The version in service exported for the edge runtime, as a tar of the bundle's folder",
    response_class=Response,
    responses={200: {"content": {"application/x-tar": {}}}, 404: {"description": "no bundle in that format"}},
)
async def bundle(
    entry: LineDep, services: ServicesDep, format: Literal["onnx", "openvino"] = Query("onnx")
) -> Response:
    files = await asyncio.to_thread(services.store.read_bundle, entry.line, entry.version, format)
    name = f"{entry.line}-{entry.version}-{format}"
    return Response(
        await asyncio.to_thread(tar_folder, name, files),
        media_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{name}.tar"'},
    )


def tar_folder(name: str, files: dict[str, bytes]) -> bytes:
    """``files`` as the folder ``name/`` in an uncompressed tar (the graphs' weights barely compress)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for file, data in sorted(files.items()):
            info = tarfile.TarInfo(f"{name}/{file}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@router.put(
    "/v1/lines/{line}/threshold",
    response_model=ThresholdChanged,
    summary="Change a line's sensitivity (stored as a new version)",
)
async def change_threshold(
    entry: LineDep, update: ThresholdUpdate, services: ServicesDep, who: CallerDep
) -> ThresholdChanged:
    card = await asyncio.to_thread(
        set_threshold, services.store, entry.line, update.threshold, update.note, _actor(who)
    )
    services.lines.invalidate(entry.line)
    return ThresholdChanged(
        line=entry.line,
        version=card.version,
        previous_version=entry.version,
        threshold=card.threshold.value,
        previous_threshold=entry.card.threshold.value,
    )


@router.put(
    "/v1/lines/{line}/severity",
    response_model=SeverityChanged,
    summary="Change a classifier line's severity rules (stored as a new version)",
)
async def change_severity(entry: LineDep, update: SeverityUpdate, services: ServicesDep) -> SeverityChanged:
    card = await asyncio.to_thread(set_severity, services.store, entry.line, update.rules, update.note)
    services.lines.invalidate(entry.line)
    assert card.classifier is not None
    previous = entry.card.classifier.severity if entry.card.classifier else {}
    return SeverityChanged(
        line=entry.line,
        version=card.version,
        previous_version=entry.version,
        severity=card.classifier.severity,
        previous_severity=previous,
    )


@router.put(
    "/v1/lines/{line}/alarm",
    response_model=AlarmChanged,
    summary="Change a sensor line's alarm rule: k of n, hysteresis, minimum duration (stored as a new version)",
)
async def change_alarm(entry: LineDep, update: AlarmUpdate, services: ServicesDep, who: CallerDep) -> AlarmChanged:
    changes = update.model_dump(exclude_none=True, exclude={"note"})
    if not changes:
        raise APIError(422, "send at least one of k, n, clear_ratio, min_duration")
    card = await asyncio.to_thread(set_alarm, services.store, entry.line, changes, update.note, _actor(who))
    services.lines.invalidate(entry.line)
    assert card.alarm is not None
    previous = entry.card.alarm.model_dump() if entry.card.alarm is not None else None
    return AlarmChanged(
        line=entry.line,
        version=card.version,
        previous_version=entry.version,
        alarm=card.alarm.model_dump(),
        previous_alarm=previous,
    )

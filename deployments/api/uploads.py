"""Reading what a request sends: image files from a multipart form, sensor readings from JSON, or a refusal
that names what was expected (415 for the wrong content type, 413 over a limit, 422 for the rest)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException  # FastAPI's is a subclass, which misses the middleware's
from starlette.requests import ClientDisconnect

from lineguard.deployments.api.errors import APIError
from lineguard.deployments.lines import LineEntry
from lineguard.deployments.text import escaped, printable
from lineguard_edge.readings import Readings, parse_readings

MAX_SENSOR_ID = 200
BODY_LIMITS = frozenset({408, 413})  # what BodyLimitMiddleware raises while the form is read


@dataclass
class Upload:
    files: list[tuple[str | None, bytes]]  # (file name, bytes), in the order sent
    sensor_id: str | None


def _malformed(why: str, limit: int) -> APIError:
    if "Too many files" in why:
        return APIError(413, f"more than {limit} files in one request, over the limit of {limit}")
    return APIError(422, f"malformed multipart body: {why}")


async def read_images(request: Request, field: str, limit: int, max_image_bytes: int) -> Upload:
    """Up to ``limit`` image files from the form field ``field`` (and the optional ``sensor_id``)."""
    content_type = request.headers.get("content-type", "")
    if "json" in content_type:
        raise APIError(
            422,
            f"this is an image line: send the image as multipart/form-data with a file field named {field!r}, not JSON",
        )
    if not content_type.startswith("multipart/form-data"):
        raise APIError(
            415 if content_type else 422,
            f"send the image as multipart/form-data with a file field named {field!r} "
            f"(got content-type {content_type or 'none'!r})",
        )
    try:
        form = await request.form(max_files=limit, max_fields=10)
    except ClientDisconnect:
        raise
    except HTTPException as err:
        if err.status_code in BODY_LIMITS:  # the body's size or time limit (BodyLimitMiddleware)
            raise
        raise _malformed(str(err.detail), limit) from err  # starlette's 400 for a malformed multipart body
    except Exception as err:  # MultiPartException and friends, outside an app's scope
        raise _malformed(str(err), limit) from err
    uploads = [v for k, v in form.multi_items() if k == field]
    if not uploads:
        raise APIError(422, f"no file field named {field!r} in the form (fields: {sorted(set(form.keys()))})")
    if len(uploads) > limit:
        raise APIError(413, f"{len(uploads)} files in one request, over the limit of {limit}")
    files = []
    for upload in uploads:
        if not isinstance(upload, UploadFile):
            raise APIError(422, f"field {field!r} must be a file upload, not a text value")
        data = await upload.read(max_image_bytes + 1)
        if len(data) > max_image_bytes:
            raise APIError(413, f"file {upload.filename!r} is over the limit of {max_image_bytes} bytes")
        files.append((escaped(upload.filename) if upload.filename else upload.filename, data))
    sensor = form.get("sensor_id")
    sensor_id = printable(sensor, "sensor_id", MAX_SENSOR_ID) if isinstance(sensor, str) and sensor else None
    return Upload(files, sensor_id)


async def read_readings(request: Request, entry: LineEntry, max_rows: int) -> Readings:
    """The readings of a JSON body for the sensor line ``entry`` (checked against its features)."""
    inputs = entry.card.inputs
    if inputs is None:
        raise APIError(422, f"line {entry.line!r} is a {entry.kind} line: it does not take sensor readings")
    content_type = request.headers.get("content-type", "")
    if "json" not in content_type:
        raise APIError(
            415 if content_type else 422,
            f"line {entry.line!r} is a sensor line: send JSON "
            f'{{"values": [..{inputs.n_features} numbers..]}} with content-type application/json '
            f"(got {content_type or 'none'!r})",
        )
    body = await request.body()  # the body limit holds it to max_request_bytes
    return parse_readings(body, entry.line, inputs.features, max_rows)

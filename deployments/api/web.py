"""The operators' web page (``/``, its assets under ``/ui/``) and the sample folders its simulator reads.

The page is three static files shipped in the package (``deployments/web/``): no build step, no CDN, so it
works on a line with no internet. It calls the same API as every other client, with the key the
operator types in. The page and its assets need no key (they hold no data; the page asks for a key when
the API answers 401); the sample routes need one like every other route.

No ``from __future__ import annotations``: FastAPI reads the routes' annotations at import.
"""

import asyncio
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, Response

from lineguard.deployments.api.deps import ServicesDep
from lineguard.deployments.api.errors import APIError
from lineguard.deployments.samples import NoSampleRootsError, SampleError

router = APIRouter()
ASSET_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css"}
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".bmp": "image/bmp"}
IMAGE_TYPES |= {".tif": "image/tiff", ".tiff": "image/tiff", ".webp": "image/webp"}
FOLDER = Query(..., min_length=1, max_length=500, description="a folder id from GET /v1/samples")


def _assets() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once: name -> (bytes, content type)."""
    web = files("lineguard.deployments") / "web"
    out = {}
    for item in web.iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if item.is_file() and suffix in ASSET_TYPES:
            out[item.name] = (item.read_bytes(), ASSET_TYPES[suffix])
    return out


ASSETS = _assets()
# the page is small and changes with the package: revalidate each load, never serve a stale script
NO_CACHE = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def _sample_error(err: SampleError) -> APIError:
    return APIError(409 if isinstance(err, NoSampleRootsError) else 404, str(err))


@router.get("/", include_in_schema=False)
async def page() -> Response:
    body, media_type = ASSETS["index.html"]
    return Response(body, media_type=media_type, headers=NO_CACHE)


@router.get("/ui/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    if name not in ASSETS or name == "index.html":
        raise APIError(404, f"no page asset {name!r}")
    body, media_type = ASSETS[name]
    return Response(body, media_type=media_type, headers=NO_CACHE)


@router.get("/v1/samples", summary="Labelled test folders (MVTec layout) the simulator can read")
async def sample_folders(services: ServicesDep) -> dict[str, Any]:
    found = await asyncio.to_thread(services.samples.folders)
    return {
        "roots": sorted(services.samples.roots),
        "folders": [{"id": f.id, "good": f.good, "defective": f.defective, "types": f.types} for f in found],
    }


@router.get("/v1/samples/images", summary="A sample folder's test images with their true labels")
async def sample_images(services: ServicesDep, folder: str = FOLDER) -> dict[str, Any]:
    try:
        images = await asyncio.to_thread(services.samples.images, folder)
    except SampleError as err:
        raise _sample_error(err) from err
    return {
        "folder": folder,
        "images": [{"path": i.path, "label": i.label, "defect_type": i.defect_type} for i in images],
    }


@router.get(
    "/v1/samples/image",
    response_class=FileResponse,
    responses={200: {"content": {"image/*": {}}}},
    summary="One test image of a sample folder",
)
async def sample_image(
    services: ServicesDep, folder: str = FOLDER, path: str = Query(..., min_length=1, max_length=500)
) -> FileResponse:
    try:
        file = await asyncio.to_thread(services.samples.image, folder, path)
    except SampleError as err:
        raise _sample_error(err) from err
    return FileResponse(file, media_type=IMAGE_TYPES.get(file.suffix.lower(), "application/octet-stream"))

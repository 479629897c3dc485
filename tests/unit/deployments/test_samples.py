"""Sample folders for the simulator: found under the roots, labelled by folder, and never a path outside."""

from __future__ import annotations

from pathlib import Path

import pytest

from lineguard.deployments.samples import NoSampleRootsError, SampleError, SampleRoots
from lineguard.training.synthetic import write_line


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    write_line(root / "metal" / "surface", seed=1, size=32, n_train=2, n_test_good=3, n_per_defect=2)
    write_line(root / "deep" / "a" / "b" / "c", seed=2, size=32, n_train=2, n_test_good=1, n_per_defect=1)  # too deep
    (root / "empty" / "test" / "good").mkdir(parents=True)  # no images: not a sample folder
    (root / "secret.png").write_bytes(b"outside every test folder")
    return root


def test_folders_are_found_with_their_labels(roots: Path) -> None:
    samples = SampleRoots([str(roots)])
    folders = {f.id: f for f in samples.folders()}
    assert list(folders) == [f"{roots.name}/metal/surface"]
    surface = folders[f"{roots.name}/metal/surface"]
    assert surface.good == 3 and surface.defective == 2 * len(surface.types) - 2
    images = samples.images(surface.id)
    assert len(images) == surface.good + surface.defective
    assert {(i.label, i.defect_type == "good") for i in images} == {("ok", True), ("ng", False)}
    first = images[0]
    assert samples.image(surface.id, first.path) == (roots / "metal" / "surface" / first.path).resolve()


@pytest.mark.parametrize(
    "path",
    [
        "../../secret.png",
        "test/../../../secret.png",
        "/etc/passwd",
        "train/good/000.png",  # a training image, not a test image
        "ground_truth/scratch/000_mask.png",
        "test/good/../../train/good/000.png",
        "test/good/nope.png",
        "test/good/000.png\x00.txt",
        "test/good",
    ],
)
def test_paths_outside_the_test_images_are_refused(roots: Path, path: str) -> None:
    samples = SampleRoots([str(roots)])
    with pytest.raises(SampleError, match="is not a test image"):
        samples.image(f"{roots.name}/metal/surface", path)


def test_a_link_out_of_the_folder_is_refused(roots: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"\x89PNG")
    link = roots / "metal" / "surface" / "test" / "good" / "link.png"
    link.symlink_to(outside)
    try:
        with pytest.raises(SampleError):
            SampleRoots([str(roots)]).image(f"{roots.name}/metal/surface", "test/good/link.png")
    finally:
        link.unlink()


@pytest.mark.parametrize("folder", ["nowhere/metal/surface", "{root}/../..", "{root}/metal", "{root}/empty", "{root}"])
def test_unknown_folders_are_refused(roots: Path, folder: str) -> None:
    with pytest.raises(SampleError, match="sample"):
        SampleRoots([str(roots)]).images(folder.format(root=roots.name))


def test_no_roots_names_the_setting() -> None:
    samples = SampleRoots([])
    assert samples.folders() == []
    with pytest.raises(NoSampleRootsError, match=r"web\.sample_roots"):
        samples.images("anything")

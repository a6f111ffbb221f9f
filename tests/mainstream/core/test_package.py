"""M-Package: write, read and verify real packages with tiny Keras models; refuse bad ones whole."""

from __future__ import annotations

import io
import json
import os
import stat
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import mainstream.core.package as package_module
from mainstream.cli.package import package as package_cli
from mainstream.core.errors import InvalidParameterError, PackageError, WeakCandidatesError
from mainstream.core.manifest import (
    AppInfo,
    BaseModelInfo,
    CandidateInfo,
    EventStats,
    Manifest,
    TrainingInfo,
    frame_evidence,
)
from mainstream.core.package import (
    PackageLimits,
    candidate_archive_name,
    inspect_package,
    read_package,
    sha256_file,
    verify_package,
    write_package,
)

keras = pytest.importorskip("keras")

# A real base (MobileNet, alpha 0.25, 32 px): cut points and their shapes are checked against it.
BASE_INPUT = (32, 32, 3)
CUT_SHAPE = (4, 4, 64)  # its tensor at conv_pw_5_relu
DEEP_CUT = "conv_pw_5_relu"
BASE_FILE = "base/weights.h5"


@dataclass(frozen=True)
class Models:
    """Saved tiny suffixes: one at the `input` cut, one at a deeper cut, and a Lambda one."""

    input_suffix: Path
    deep_suffix: Path
    lambda_suffix: Path
    base_weights: Path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    folder = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(7)

    inputs = keras.Input(BASE_INPUT)
    hidden = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    input_suffix = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))
    input_suffix.save(folder / "input.keras")
    input_suffix.save_weights(folder / "base.weights.h5")  # stands in for the base's weights

    inputs = keras.Input(CUT_SHAPE)
    hidden = keras.layers.GlobalAveragePooling2D()(inputs)
    deep_suffix = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))
    deep_suffix.save(folder / "deep.keras")

    inputs = keras.Input(CUT_SHAPE)
    hidden = keras.layers.Lambda(lambda tensor: tensor * 2.0)(inputs)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    lambda_suffix = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))
    lambda_suffix.save(folder / "lambda.keras")

    return Models(
        input_suffix=folder / "input.keras",
        deep_suffix=folder / "deep.keras",
        lambda_suffix=folder / "lambda.keras",
        base_weights=folder / "base.weights.h5",
    )


def candidate(cut_point: str, path: Path, **overrides: Any) -> CandidateInfo:
    fields: dict[str, Any] = {
        "cut_point": cut_point,
        "frozen_layers": 0 if cut_point == "input" else 35,
        "recall": 0.91,
        "false_positive_rate": 0.07,
        "accuracy": 0.93,
        "file": candidate_archive_name(cut_point),
        "sha256": sha256_file(path),
    }
    fields.update(overrides)
    return CandidateInfo(**fields)


def make_manifest(
    candidates: list[CandidateInfo], base_weights: Path | None = None, classes: int = 2
) -> Manifest:
    names = ["nothing", "train", "bus"][:classes]
    return Manifest(
        app=AppInfo(name="trains", classes=names, positive_class="train"),
        base_model=BaseModelInfo(
            name="mobilenet_v1",
            input_shape=BASE_INPUT,
            preprocessing="scale_-1_1",
            weights_fingerprint="ab" * 32,
            alpha=0.25,
        ),
        event_stats=EventStats(
            event_length_s=0.5,
            event_frequency=0.2,
            correlation=0.3,
            camera_fps=10,
            how_measured="labelled intervals",
        ),
        candidates=candidates,
        training=TrainingInfo(epochs=1, library_versions={"keras": keras.__version__}),
        base_weights=None
        if base_weights is None
        else {"file": BASE_FILE, "sha256": sha256_file(base_weights)},
    )


def write_good_package(models: Models, out_path: Path) -> Path:
    manifest = make_manifest(
        [candidate("input", models.input_suffix), candidate(DEEP_CUT, models.deep_suffix)],
        base_weights=models.base_weights,
    )
    files = {
        candidate_archive_name("input"): models.input_suffix,
        candidate_archive_name(DEEP_CUT): models.deep_suffix,
        BASE_FILE: models.base_weights,
    }
    return write_package(out_path, manifest, files)


@pytest.fixture
def good_package(models: Models, tmp_path: Path) -> Path:
    return write_good_package(models, tmp_path / "good" / "trains.mpkg")


@pytest.fixture
def private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point tempfile at an empty folder, so that leaked temp extractions can be seen."""
    folder = tmp_path / "system-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder


# ---------------------------------------------------------------------------------------------
# Round trip


def test_round_trip_gives_the_same_predictions(
    models: Models, good_package: Path, private_tempdir: Path
) -> None:
    rng = np.random.default_rng(3)
    batches = {
        "input": rng.normal(size=(4, *BASE_INPUT)).astype("float32"),
        DEEP_CUT: rng.normal(size=(4, *CUT_SHAPE)).astype("float32"),
    }
    originals = {"input": models.input_suffix, DEEP_CUT: models.deep_suffix}
    with read_package(good_package) as package:
        assert package.root.parent == private_tempdir
        assert package.manifest.app.name == "trains"
        assert package.manifest.checksums == {
            candidate_archive_name("input"): sha256_file(models.input_suffix),
            candidate_archive_name(DEEP_CUT): sha256_file(models.deep_suffix),
            BASE_FILE: sha256_file(models.base_weights),
        }
        assert package.base_weights_path is not None
        assert package.base_weights_path.read_bytes() == models.base_weights.read_bytes()
        for cut_point, batch in batches.items():
            original = keras.models.load_model(originals[cut_point], compile=False)
            loaded = package.load_candidate(cut_point)
            expected = np.asarray(original(batch))
            np.testing.assert_allclose(np.asarray(loaded(batch)), expected, rtol=1e-6)
            assert float(np.abs(expected - 0.5).max()) > 1e-4  # not a constant output
        with pytest.raises(PackageError, match="no candidate at cut point 'conv_pw_9'"):
            package.candidate_path("conv_pw_9")
        root = package.root
    assert not root.exists()
    assert list(private_tempdir.iterdir()) == []


def test_read_into_a_chosen_directory_keeps_the_files(good_package: Path, tmp_path: Path) -> None:
    destination = tmp_path / "extracted" / "trains"
    with read_package(good_package, extract_to=destination) as package:
        assert package.root == destination
    assert sorted(str(p.relative_to(destination)) for p in destination.rglob("*.*")) == sorted(
        [
            BASE_FILE,
            candidate_archive_name("input"),
            candidate_archive_name(DEEP_CUT),
            "manifest.json",
        ]
    )
    assert Manifest.model_validate_json((destination / "manifest.json").read_bytes()) == (
        package.manifest
    )
    with pytest.raises(InvalidParameterError, match="extract_to"):
        read_package(good_package, extract_to=destination)  # not empty any more


def test_writing_twice_gives_identical_archives(models: Models, tmp_path: Path) -> None:
    manifest = make_manifest([candidate(DEEP_CUT, models.deep_suffix)])
    files = {candidate_archive_name(DEEP_CUT): models.deep_suffix}
    first = write_package(tmp_path / "a.mpkg", manifest, files)
    second = write_package(tmp_path / "b.mpkg", manifest, files)
    assert first.read_bytes() == second.read_bytes()


def test_verify_reports_every_candidate(good_package: Path) -> None:
    report = verify_package(good_package)
    shapes = {check.cut_point: check.input_shape for check in report.candidates}
    assert shapes == {"input": BASE_INPUT, DEEP_CUT: CUT_SHAPE}
    assert all(check.parameters and check.parameters > 0 for check in report.candidates)
    assert report.archive_sha256 == sha256_file(good_package)
    assert report.summary().startswith("OK trains.mpkg: app 'trains'")


# ---------------------------------------------------------------------------------------------
# CLI


def test_inspect_prints_the_summary_and_the_candidate_table(good_package: Path) -> None:
    result = CliRunner().invoke(package_cli, ["inspect", str(good_package)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "app          trains" in lines
    assert any("positive: train" in line for line in lines)
    assert any("ab" * 32 in line for line in lines)
    assert any(line.startswith("events") and "correlation 0.3" in line for line in lines)
    header = next(line for line in lines if line.startswith("cut point"))
    assert header.split() == [
        "cut", "point", "frozen", "recall", "recall", "90%", "FPR", "FPR", "90%",
        "pos", "fired", "neg", "fired", "F1@10fps", "90%", "accuracy", "size",
    ]  # fmt: skip
    # Without held-out counts the ratios are all there is: no estimates, no interval. F1 at
    # 10 fps over 5-frame events: R = 1 - 0.09 * 0.363^4 = 0.998, Q = 1 - 0.93 * 0.951^4 =
    # 0.239, P = 0.2R / (0.2R + 0.8Q) = 0.510, F1 = 0.676.
    deep_row = next(line for line in lines if line.startswith(DEEP_CUT))
    assert deep_row.split()[1:9] == ["35", "0.910", "-", "0.070", "-", "-", "-", "0.676"]
    assert "no held-out counts" in result.stderr


def with_evidence(document: dict[str, Any]) -> None:
    """The issue's package: 2 held-out events, 94 positive and 206 negative frames, no FP."""
    for entry in document["candidates"]:
        entry.update(recall=88 / 94, false_positive_rate=0.0)
        entry["evidence"] = {
            "positive_frames": 94,
            "positive_fires": 88,
            "negative_frames": 206,
            "negative_fires": 0,
            "events": 2,
            "split": "by time, validation fraction 0.25",
        }
    document["event_stats"]["correlation_evidence"] = {
        "interval": [0.2, 0.4],
        "level": 0.9,
        "source": "event frames",
        "identifiable": True,
        "fire_fire": 80,
        "fire_miss": 6,
        "miss_fire": 5,
        "miss_miss": 1,
        "events": 2,
    }


def test_inspect_shows_estimates_and_warns_when_evidence_is_thin(
    good_package: Path, tmp_path: Path
) -> None:
    package_path = edit_manifest(good_package, tmp_path / "evidence.mpkg", with_evidence)
    result = CliRunner().invoke(package_cli, ["inspect", str(package_path)])
    assert result.exit_code == 0, result.output
    deep_row = next(line for line in result.stdout.splitlines() if line.startswith(DEEP_CUT))
    cells = deep_row.split()
    # Zero false positives in 206 frames: counted 0, estimated 0.5/207, 95 % below 0.0093.
    assert cells[1:4] == ["35", "0.936", "0.932"]  # 88.5 / 95
    assert cells[6:10] == ["0.000", "0.002", "[0.000,", "0.009]"]
    assert cells[10:12] == ["88/94", "0/206"]
    low, high = float(cells[13].strip("[,")), float(cells[14].strip("]"))
    assert low < float(cells[12]) <= high
    assert "correlation  0.300 per camera frame, 90% interval [0.200, 0.400]" in result.stdout
    assert "2 events, 94 positive and 206 negative frames" in result.stdout
    assert (
        "WARNING thin evidence: 2 held-out events (< 10); 206 negative frames (< 1,000)"
        in result.stderr
    )
    # Not calibrated yet: the warning says how, with or without labels.
    assert "`mainstream calibrate PKG --video V --labels L`, or `--no-events`" in result.stderr


def test_a_version_1_package_still_loads_with_counts_derived(
    good_package: Path, tmp_path: Path
) -> None:
    def version_1(document: dict[str, Any]) -> None:
        document["format_version"] = 1
        document["training"]["dataset"] = {
            "held_out": {"classes": {"nothing": 206, "train": 94}},
            "split": "by time, validation fraction 0.25",
        }
        document["a_field_from_elsewhere"] = {"kept": True}

    package_path = edit_manifest(good_package, tmp_path / "v1.mpkg", version_1)
    report = verify_package(package_path, load_models=False)  # checksums still hold
    assert report.manifest.format_version == 1
    (first, *_) = report.manifest.candidates
    evidence = frame_evidence(report.manifest, first)
    assert evidence is not None and evidence.derived and evidence.events is None
    assert (evidence.positive_frames, evidence.positive_fires) == (94, round(0.91 * 94))
    assert (evidence.negative_frames, evidence.negative_fires) == (206, round(0.07 * 206))
    result = CliRunner().invoke(package_cli, ["inspect", str(package_path)])
    assert result.exit_code == 0, result.output
    assert "format       version 1" in result.stdout
    assert "derived from a version-1 package" in result.stdout
    assert "number of held-out events unknown" in result.stderr


def test_inspect_json_prints_the_manifest_only(good_package: Path) -> None:
    result = CliRunner().invoke(package_cli, ["inspect", "--json", str(good_package)])
    assert result.exit_code == 0, result.output
    assert Manifest.model_validate_json(result.output) == inspect_package(good_package).manifest


def test_verify_cli_accepts_a_good_package(good_package: Path) -> None:
    result = CliRunner().invoke(package_cli, ["verify", str(good_package)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("OK trains.mpkg")
    assert "2 candidate(s)" in result.stdout


def test_verify_cli_rejects_a_tampered_package(good_package: Path, tmp_path: Path) -> None:
    bad = rewrite(good_package, tmp_path / "bad.mpkg", replace={BASE_FILE: b"not weights"})
    result = CliRunner().invoke(package_cli, ["verify", str(bad)])
    assert result.exit_code == PackageError.exit_code
    assert "checksum mismatch for 'base/weights.h5'" in result.stderr
    assert "OK" not in result.stdout


def write_weak_package(models: Models, out_path: Path) -> Path:
    """A sound package whose deep candidate never fires (what a random base trains)."""
    manifest = make_manifest(
        [
            candidate("input", models.input_suffix),
            candidate(
                DEEP_CUT, models.deep_suffix, recall=0.0, false_positive_rate=0.0, accuracy=0.8
            ),
        ]
    )
    files = {
        candidate_archive_name("input"): models.input_suffix,
        candidate_archive_name(DEEP_CUT): models.deep_suffix,
    }
    return write_package(out_path, manifest, files)


@pytest.mark.parametrize("command", ["inspect", "verify"])
def test_weak_candidates_are_flagged_and_fail_under_strict(
    command: str, models: Models, good_package: Path, tmp_path: Path
) -> None:
    weak = write_weak_package(models, tmp_path / "weak.mpkg")
    result = CliRunner().invoke(package_cli, [command, str(weak)])
    assert result.exit_code == 0, result.output
    assert f"WARNING candidate {DEEP_CUT}: recall 0" in result.stderr
    assert "1 of 2 candidate(s) are no better than the majority class" in result.stderr
    assert "WARNING candidate input" not in result.stderr

    strict = CliRunner().invoke(package_cli, [command, "--strict", str(weak)])
    assert strict.exit_code == WeakCandidatesError.exit_code == 8

    sound = CliRunner().invoke(package_cli, [command, "--strict", str(good_package)])
    assert sound.exit_code == 0, sound.output
    # (inspect still says that this package has no held-out counts: not a weak candidate)
    assert "WARNING candidate" not in sound.stderr
    assert "majority class" not in sound.stderr


@pytest.mark.parametrize("command", ["inspect", "verify"])
def test_the_mainstream_command_exits_non_zero_on_a_bad_package(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mainstream.cli.main import main

    not_zip = tmp_path / "plain.mpkg"
    not_zip.write_text("hello")
    with pytest.raises(SystemExit) as exit_info:
        main(["package", command, str(not_zip)])
    assert exit_info.value.code == PackageError.exit_code
    assert "not a zip archive" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Bad packages


def rewrite(
    source: Path,
    target: Path,
    replace: dict[str, bytes] | None = None,
    add: list[tuple[zipfile.ZipInfo | str, bytes]] | None = None,
    drop: set[str] | None = None,
) -> Path:
    """A copy of a zip archive with members replaced, added or dropped."""
    replace, add, drop = replace or {}, add or [], drop or set()
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for info in original.infolist():
            if info.filename in drop:
                continue
            copy.writestr(info, replace.get(info.filename, original.read(info)))
        for entry, data in add:
            copy.writestr(entry, data, compress_type=zipfile.ZIP_DEFLATED)
    return target


def edit_manifest(source: Path, target: Path, change: Callable[[dict[str, Any]], Any]) -> Path:
    with zipfile.ZipFile(source) as archive:
        document = json.loads(archive.read("manifest.json"))
    change(document)
    return rewrite(source, target, replace={"manifest.json": json.dumps(document).encode()})


def symlink_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def flip_a_data_byte(source: Path, target: Path, member: str) -> Path:
    """Corrupt one byte of a member's compressed data in place (its CRC no longer matches)."""
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        info = archive.getinfo(member)
    name_length = int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_length = int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_length + extra_length
    data[start + info.compress_size // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    return target


def manifest_bytes(source: Path) -> bytes:
    with zipfile.ZipFile(source) as archive:
        return archive.read("manifest.json")


def duplicate_member(source: Path, target: Path) -> Path:
    with pytest.warns(UserWarning, match="Duplicate name"):
        return rewrite(source, target, add=[("manifest.json", manifest_bytes(source))])


def zero_bomb() -> bytes:
    return bytes(20 * 1024 * 1024)  # deflates about 1000x


BAD_PACKAGES: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "not a zip": (
        lambda good, bad: (bad.write_bytes(b"just some text, no archive"), bad)[1],
        r"is not a zip archive",
    ),
    "truncated zip": (
        lambda good, bad: (bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2]), bad)[1],
        r"is not a zip archive \(or it is truncated\)",
    ),
    "zip slip": (
        lambda good, bad: rewrite(good, bad, add=[("../evil", b"x")]),
        r"unsafe member name '\.\./evil': parent-directory component",
    ),
    "zip slip inside a folder": (
        lambda good, bad: rewrite(good, bad, add=[("candidates/../../evil.keras", b"x")]),
        r"unsafe member name .*parent-directory component",
    ),
    "absolute path": (
        lambda good, bad: rewrite(good, bad, add=[("/etc/x", b"x")]),
        r"unsafe member name '/etc/x': absolute path",
    ),
    "backslash": (
        lambda good, bad: rewrite(good, bad, add=[("..\\evil", b"x")]),
        r"unsafe member name .*backslash",
    ),
    "drive letter": (
        lambda good, bad: rewrite(good, bad, add=[("C:/evil", b"x")]),
        r"unsafe member name 'C:/evil': drive letter",
    ),
    "symlink": (
        lambda good, bad: rewrite(
            good, bad, add=[(symlink_entry("candidates/link.keras"), b"/etc")]
        ),
        r"'candidates/link\.keras' is a symbolic link",
    ),
    "folder outside the layout": (
        lambda good, bad: rewrite(good, bad, add=[("extras/", b"")]),
        r"folder 'extras/' outside the layout",
    ),
    "file outside the layout": (
        lambda good, bad: rewrite(good, bad, add=[("notes.txt", b"hello")]),
        r"'notes\.txt' is outside the layout",
    ),
    "tampered model bytes": (
        lambda good, bad: rewrite(
            good, bad, replace={"candidates/conv_pw_5_relu.keras": b"PK-but-not-the-model"}
        ),
        r"checksum mismatch for 'candidates/conv_pw_5_relu\.keras'.*tampered",
    ),
    "corrupt compressed data": (
        lambda good, bad: flip_a_data_byte(good, bad, "candidates/input.keras"),
        r"'candidates/input\.keras' is corrupt|checksum mismatch for 'candidates/input\.keras'",
    ),
    "missing manifest": (
        lambda good, bad: rewrite(good, bad, drop={"manifest.json"}),
        r"package has no manifest\.json",
    ),
    "manifest schema error": (
        lambda good, bad: edit_manifest(good, bad, lambda m: m["candidates"][0].update(recall=1.5)),
        r"does not follow the schema: candidates\[0\]\.recall: .*less than or equal to 1 \(got 1\.5\)",
    ),
    "missing manifest field": (
        lambda good, bad: edit_manifest(good, bad, lambda m: m["event_stats"].pop("correlation")),
        r"event_stats\.correlation: Field required",
    ),
    "unsafe candidate file in manifest": (
        lambda good, bad: edit_manifest(
            good, bad, lambda m: m["candidates"][0].update(file="../input.keras")
        ),
        r"candidates\[0\]\.file: String should match pattern",
    ),
    "unknown format_version": (
        lambda good, bad: edit_manifest(good, bad, lambda m: m.update(format_version=3)),
        r"format_version 3; this version of Mainstream reads format_version 1 and 2",
    ),
    "not an M-Package": (
        lambda good, bad: edit_manifest(good, bad, lambda m: m.update(format="other.format")),
        r"format 'other\.format', expected 'mainstream\.mpackage'",
    ),
    "manifest with duplicate keys": (
        lambda good, bad: rewrite(
            good,
            bad,
            replace={"manifest.json": manifest_bytes(good)[:-1] + b', "format_version": 1}'},
        ),
        r"manifest\.json is not valid JSON: duplicate key 'format_version'",
    ),
    "manifest with NaN": (
        lambda good, bad: rewrite(
            good,
            bad,
            replace={
                "manifest.json": manifest_bytes(good).replace(
                    b'"event_length_s": 0.5', b'"event_length_s": NaN'
                )
            },
        ),
        r"not valid JSON: NaN is not a valid JSON number",
    ),
    "inconsistent checksums": (
        lambda good, bad: edit_manifest(
            good, bad, lambda m: m["checksums"].update({BASE_FILE: "0" * 64})
        ),
        r"manifest is inconsistent: checksums\['base/weights\.h5'\]",
    ),
    "unlisted extra file": (
        lambda good, bad: rewrite(good, bad, add=[("candidates/extra.keras", b"more")]),
        r"'candidates/extra\.keras' is not listed in the manifest",
    ),
    "listed file missing": (
        lambda good, bad: rewrite(good, bad, drop={BASE_FILE}),
        r"lists 'base/weights\.h5' but the archive does not contain it",
    ),
    "duplicate member names": (duplicate_member, r"member name 'manifest\.json' more than once"),
    "case-only duplicate": (
        lambda good, bad: rewrite(good, bad, add=[("candidates/INPUT.keras", b"x")]),
        r"member name 'candidates/INPUT\.keras' more than once",
    ),
    "zip bomb": (
        lambda good, bad: rewrite(good, bad, add=[("candidates/bomb.keras", zero_bomb())]),
        r"'candidates/bomb\.keras' expands \d+x .*zip bomb",
    ),
}


def assert_nothing_extracted(tmp_path: Path, private_tempdir: Path) -> None:
    assert not (tmp_path / "out").exists()
    assert [p.name for p in (tmp_path / "out").parent.iterdir() if p.name.startswith(".out")] == []
    assert list(private_tempdir.iterdir()) == []


@pytest.mark.parametrize("case", list(BAD_PACKAGES))
def test_bad_packages_are_rejected_whole(
    case: str, good_package: Path, tmp_path: Path, private_tempdir: Path
) -> None:
    build, message = BAD_PACKAGES[case]
    bad = build(good_package, tmp_path / "bad.mpkg")
    with pytest.raises(PackageError, match=message):
        read_package(bad, extract_to=tmp_path / "out")
    with pytest.raises(PackageError, match=message):
        read_package(bad)
    with pytest.raises(PackageError, match=message):
        verify_package(bad)
    assert_nothing_extracted(tmp_path, private_tempdir)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (PackageLimits(max_member_bytes=1000), r"over the per-member limit of 1000"),
        (PackageLimits(max_members=3), r"has 4 entries, over the limit of 3"),
        (PackageLimits(max_ratio=1.5, ratio_min_bytes=0), r"expands \d+x"),
    ],
)
def test_size_limits_are_enforced(
    limits: PackageLimits, message: str, good_package: Path, tmp_path: Path, private_tempdir: Path
) -> None:
    with pytest.raises(PackageError, match=message):
        read_package(good_package, extract_to=tmp_path / "out", limits=limits)
    assert_nothing_extracted(tmp_path, private_tempdir)


def test_total_size_limit_is_enforced(
    good_package: Path, tmp_path: Path, private_tempdir: Path
) -> None:
    total = sum(inspect_package(good_package).member_sizes.values())
    with read_package(good_package, limits=PackageLimits(max_total_bytes=total)) as package:
        assert package.manifest.app.name == "trains"
    with pytest.raises(PackageError, match=rf"more than {total - 1} bytes uncompressed"):
        read_package(
            good_package,
            extract_to=tmp_path / "out",
            limits=PackageLimits(max_total_bytes=total - 1),
        )
    assert_nothing_extracted(tmp_path, private_tempdir)


def test_a_bomb_that_lies_about_its_size_is_cut_off(tmp_path: Path) -> None:
    """A member whose header understates its size never yields more than it declares."""
    archive_bytes = io.BytesIO()
    with zipfile.ZipFile(archive_bytes, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", bytes(5 * 1024 * 1024))
    data = bytearray(archive_bytes.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo("manifest.json")
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (100).to_bytes(4, "little")  # declared size: 100 bytes
    lying = tmp_path / "lying.mpkg"
    lying.write_bytes(bytes(data))
    assert info.file_size == 5 * 1024 * 1024
    with pytest.raises(PackageError, match=r"'manifest\.json' is corrupt: Bad CRC-32"):
        inspect_package(lying)


# ---------------------------------------------------------------------------------------------
# Models refused at verification


def package_one(models_path: Path, tmp_path: Path, **overrides: Any) -> Path:
    classes = overrides.pop("classes", 2)
    manifest = make_manifest([candidate(DEEP_CUT, models_path, **overrides)], classes=classes)
    return write_package(
        tmp_path / "one.mpkg", manifest, {candidate_archive_name(DEEP_CUT): models_path}
    )


def test_a_lambda_layer_is_refused_by_the_allow_list_and_by_safe_mode(
    models: Models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = package_one(models.lambda_suffix, tmp_path)
    refused = r"layer 'lambda' of class keras\.layers\.Lambda, which Mainstream does not load"
    with pytest.raises(PackageError, match=refused):
        verify_package(path)
    with pytest.raises(PackageError, match=refused):
        verify_package(path, load_models=False)  # the allow-list needs no TensorFlow
    with read_package(path) as package:  # behind the allow-list, Keras safe mode refuses it too
        monkeypatch.setattr(package_module, "_check_keras_archive", lambda *args: None)
        with pytest.raises(PackageError, match=r"cannot be loaded in Keras safe mode.*Lambda"):
            package.load_candidate(DEEP_CUT)


def test_a_model_referring_to_foreign_code_is_refused(models: Models, tmp_path: Path) -> None:
    with zipfile.ZipFile(models.deep_suffix) as archive:
        config = json.loads(archive.read("config.json"))
    config["config"]["layers"][1]["module"] = "os"
    hostile = rewrite(
        models.deep_suffix,
        tmp_path / "hostile.keras",
        replace={"config.json": json.dumps(config).encode()},
    )
    path = package_one(hostile, tmp_path)
    with pytest.raises(
        PackageError, match=r"of class os\.GlobalAveragePooling2D, which Mainstream"
    ):
        verify_package(path)


def test_a_model_file_with_extra_members_is_refused(models: Models, tmp_path: Path) -> None:
    padded = rewrite(models.deep_suffix, tmp_path / "padded.keras", add=[("assets/x", b"x")])
    path = package_one(padded, tmp_path)
    with pytest.raises(PackageError, match=r"unexpected members \['assets/x'\]"):
        verify_package(path)


def test_a_model_that_is_not_a_keras_file_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "fake.keras"
    fake.write_bytes(b"\x80\x04pickle-looking bytes")
    path = package_one(fake, tmp_path)
    with pytest.raises(PackageError, match=r"model 'conv_pw_5_relu\.keras' is not a zip archive"):
        verify_package(path)


def test_output_must_give_one_score_per_class(models: Models, tmp_path: Path) -> None:
    path = package_one(models.deep_suffix, tmp_path, classes=3)
    with pytest.raises(PackageError, match=r"outputs shape \(2,\), expected \(3,\)"):
        verify_package(path)


def test_input_must_match_the_declared_cut_shape(models: Models, tmp_path: Path) -> None:
    path = package_one(models.deep_suffix, tmp_path, input_shape=(7, 7, 8))
    with pytest.raises(
        PackageError, match=r"declares input_shape \(7, 7, 8\), but the base .* \(4, 4, 64\)"
    ):
        verify_package(path)
    good = package_one(models.deep_suffix, tmp_path, input_shape=CUT_SHAPE)
    assert verify_package(good).candidates[0].input_shape == CUT_SHAPE


def test_the_input_cut_must_take_the_base_input(models: Models, tmp_path: Path) -> None:
    manifest = make_manifest([candidate("input", models.deep_suffix)])  # takes 4x4x64
    path = write_package(
        tmp_path / "x.mpkg", manifest, {candidate_archive_name("input"): models.deep_suffix}
    )
    with pytest.raises(
        PackageError, match=r"'input\.keras' takes input shape \(4, 4, 64\).*\(32, 32, 3\)"
    ):
        verify_package(path)


# ---------------------------------------------------------------------------------------------
# Hardening: what a tamperer can make consistent must still be refused before anything is built


@pytest.mark.parametrize(
    ("cut_point", "message"),
    [
        ("../../x", r"candidates\[1\]\.cut_point: String should match pattern"),
        (
            "conv_pw_99_relu",
            r"cut point 'conv_pw_99_relu' is not a cut point of the base mobilenet_v1 "
            r"\(input 32, alpha 0\.25\); its cut points are input, conv1, ",
        ),
    ],
)
def test_a_cut_point_the_base_does_not_have_is_refused(
    cut_point: str, message: str, good_package: Path, tmp_path: Path, private_tempdir: Path
) -> None:
    bad = edit_manifest(
        good_package,
        tmp_path / "bad.mpkg",
        lambda m: m["candidates"][1].update(cut_point=cut_point),
    )
    with pytest.raises(PackageError, match=message) as refused:
        verify_package(bad)
    assert "\n" not in str(refused.value)
    assert list(private_tempdir.iterdir()) == []


def edit_config(source: Path, target: Path, change: Callable[[dict[str, Any]], Any]) -> Path:
    """A copy of a `.keras` file with its config.json changed (the weights are left alone)."""
    with zipfile.ZipFile(source) as archive:
        config = json.loads(archive.read("config.json"))
    change(config)
    return rewrite(source, target, replace={"config.json": json.dumps(config).encode()})


def layer_of(config: dict[str, Any], class_name: str) -> dict[str, Any]:
    return next(item for item in config["config"]["layers"] if item["class_name"] == class_name)


def never_build(*args: Any, **kwargs: Any) -> None:
    pytest.fail("Keras was asked to build a model the checks should have refused")


HUGE_MODELS: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "a huge dense layer": (
        lambda config: layer_of(config, "Dense")["config"].update(units=2_000_000),
        r"declares more than 50,000,000 parameters \(at model 'conv_pw_5_relu\.keras' layer "
        r"'dense[_0-9]*' \(Dense\), which alone holds 130,000,000\)",
    ),
    "a build shape that lies": (
        lambda config: layer_of(config, "Dense")["build_config"].update(
            input_shape=[None, 10_000_000]
        ),
        r"declares a build input shape \[None, 10000000\] but receives \[None, 64\]",
    ),
    "an input tensor shape that lies": (
        lambda config: layer_of(config, "Dense")["inbound_nodes"][0]["args"][0]["config"].update(
            shape=[None, 10_000_000]
        ),
        r"declares an input of shape \[None, 10000000\] but receives \(None, 64\)",
    ),
    "a huge input tensor": (
        lambda config: layer_of(config, "InputLayer")["config"].update(
            batch_shape=[None, 100_000, 100_000, 64]
        ),
        r"makes a tensor of shape \(100000, 100000, 64\) .*over the limit of 67,108,864 elements",
    ),
}


@pytest.mark.parametrize("case", list(HUGE_MODELS))
def test_a_model_declaring_too_much_is_refused_before_keras_builds_it(
    case: str, models: Models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keras allocates whatever a config declares: Dense(units=2e6) took > 6 GB to load."""
    change, message = HUGE_MODELS[case]
    huge = edit_config(models.deep_suffix, tmp_path / "huge.keras", change)
    path = package_one(huge, tmp_path)
    monkeypatch.setattr(keras.models, "load_model", never_build)
    with pytest.raises(PackageError, match=message):
        verify_package(path)
    with pytest.raises(PackageError, match=message):
        verify_package(path, load_models=False)  # the estimate needs no TensorFlow


def test_the_estimate_is_keras_own_count_for_real_models(models: Models) -> None:
    for path, shape in [(models.input_suffix, BASE_INPUT), (models.deep_suffix, CUT_SHAPE)]:
        figures = package_module.check_keras_file(path, input_shape=shape)
        assert figures.input_shape == shape
        assert figures.parameters == keras.models.load_model(path, compile=False).count_params()


def lying_zip(target: Path, members: list[tuple[str, bytes]], liar: str, claimed: int) -> Path:
    """A zip archive, honest but for `liar`'s compressed size in the central directory, which
    claims `claimed` bytes: its expansion ratio then looks harmless. The members that follow
    `liar` must hold at least that many bytes, so that the claim stays inside the archive."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    data = bytearray(target.read_bytes())
    entry = data.find(b"PK\x01\x02")
    while data[entry + 46 : entry + 46 + len(liar)] != liar.encode():
        entry = data.find(b"PK\x01\x02", entry + 1)
    data[entry + 20 : entry + 24] = claimed.to_bytes(4, "little")
    target.write_bytes(bytes(data))
    return target


MiB = 1024 * 1024
ZEROS = bytes(20 * MiB)  # deflates about 1000x
NOISE = np.random.default_rng(5).bytes(300 * 1024)  # does not deflate at all


def test_a_bomb_that_lies_about_its_compressed_size_is_cut_off(
    models: Models, tmp_path: Path, private_tempdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20 MiB of zeros that claim 250 KB compressed (84x, under the 100x limit) were written
    out whole before the package was refused; now extraction stops after about a MiB."""
    bomb, weights = tmp_path / "bomb.keras", tmp_path / "noise.h5"
    bomb.write_bytes(ZEROS)  # the manifest's checksums agree: only the sizes lie
    weights.write_bytes(NOISE)
    manifest = make_manifest([candidate(DEEP_CUT, bomb)], base_weights=weights)
    lying = lying_zip(
        tmp_path / "lying.mpkg",
        [
            (candidate_archive_name(DEEP_CUT), ZEROS),
            (BASE_FILE, NOISE),
            ("manifest.json", manifest.model_dump_json().encode()),
        ],
        liar=candidate_archive_name(DEEP_CUT),
        claimed=250_000,
    )
    assert inspect_package(lying).member_sizes[candidate_archive_name(DEEP_CUT)] == len(ZEROS)

    written: list[int] = [0]
    real_open = open

    class CountingFile:
        def __init__(self, stream: Any) -> None:
            self.stream = stream

        def write(self, data: bytes) -> int:
            written[0] += len(data)
            return int(self.stream.write(data))

        def __enter__(self) -> CountingFile:
            return self

        def __exit__(self, *exc: object) -> None:
            self.stream.close()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.stream, name)

    def counting_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        stream = real_open(file, mode, *args, **kwargs)
        return CountingFile(stream) if "x" in mode or "w" in mode else stream

    monkeypatch.setattr(package_module, "open", counting_open, raising=False)
    monkeypatch.setattr(keras.models, "load_model", never_build)
    expands = r"member 'candidates/conv_pw_5_relu\.keras' expands over 100x its compressed bytes"
    with pytest.raises(PackageError, match=expands):
        read_package(lying, extract_to=tmp_path / "out")
    with pytest.raises(PackageError, match=expands):
        verify_package(lying)
    assert written[0] < 2 * 2 * MiB  # two attempts, each cut off after about one MiB
    assert_nothing_extracted(tmp_path, private_tempdir)


def test_a_model_file_whose_weights_lie_about_their_size_is_refused_before_keras_reads_it(
    models: Models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keras reads (or extracts to disk) model.weights.h5 as the model file's zip declares."""
    with zipfile.ZipFile(models.deep_suffix) as archive:
        config = archive.read("config.json")
    lying = lying_zip(
        tmp_path / "lying.keras",
        [("model.weights.h5", ZEROS), ("metadata.json", NOISE), ("config.json", config)],
        liar="model.weights.h5",
        claimed=250_000,
    )
    path = package_one(lying, tmp_path)
    monkeypatch.setattr(keras.models, "load_model", never_build)
    with pytest.raises(PackageError, match=r"'model\.weights\.h5' expands over 100x"):
        verify_package(path)


def config_with(change: Callable[[dict[str, Any]], Any]) -> Callable[[Models, Path], Path]:
    return lambda models, folder: edit_config(models.deep_suffix, folder / "odd.keras", change)


def layer_norm_model(models: Models, folder: Path) -> Path:
    inputs = keras.Input(CUT_SHAPE)
    hidden = keras.layers.LayerNormalization()(inputs)  # harmless, but no base or head uses it
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))
    model.save(folder / "layer-norm.keras")
    return folder / "layer-norm.keras"


NOT_ALLOWED: dict[str, tuple[Callable[[Models, Path], Path], str]] = {
    "a Keras layer outside the allow-list": (
        layer_norm_model,
        r"uses layer 'layer_normalization[_0-9]*' of class keras\.layers\.LayerNormalization, "
        r"which Mainstream does not load \(allowed: Activation, Add, ",
    ),
    "a Keras function as an initializer": (
        config_with(
            lambda config: layer_of(config, "Dense")["config"].update(
                kernel_initializer={
                    "module": "keras.models",
                    "class_name": "function",
                    "config": "load_model",
                    "registered_name": "function",
                }
            )
        ),
        r"refers to keras\.models\.function, which Mainstream does not load",
    ),
    "a custom object by registered name": (
        config_with(lambda config: layer_of(config, "Dense").update(registered_name="Custom>D")),
        r"names the registered object 'Custom>D' for keras\.layers\.Dense",
    ),
}


@pytest.mark.parametrize("case", list(NOT_ALLOWED))
def test_only_the_projects_own_layers_and_objects_are_loaded(
    case: str, models: Models, tmp_path: Path
) -> None:
    build, message = NOT_ALLOWED[case]
    path = package_one(build(models, tmp_path), tmp_path)
    with pytest.raises(PackageError, match=message):
        verify_package(path)
    with pytest.raises(PackageError, match=message):
        verify_package(path, load_models=False)


def test_the_allow_list_covers_every_supported_base() -> None:
    """Every layer of every supported base body is allowed (and has a size estimate)."""
    from mainstream.core.bases import BASE_NAMES, BaseConfig, build_base

    used = set()
    for name in BASE_NAMES:
        size = 75 if name == "inception_v3" else 32
        used |= {type(layer).__name__ for layer in build_base(BaseConfig(name, size)).layers}
    assert used <= package_module.ALLOWED_LAYERS
    assert package_module.ALLOWED_LAYERS - used == {
        "GlobalAveragePooling2D",
        "Dropout",
        "Dense",
        "Rescaling",
        "UnitNormalization",
    }


# ---------------------------------------------------------------------------------------------
# Writing


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize(
    ("files_change", "message"),
    [
        (lambda files, models: files.pop(BASE_FILE), r"refers to 'base/weights\.h5' but no local"),
        (
            lambda files, models: files.update({"candidates/extra.keras": models.deep_suffix}),
            r"'candidates/extra\.keras' is given but the manifest does not refer to it",
        ),
        (
            lambda files, models: files.update({"../evil.keras": models.deep_suffix}),
            r"unsafe archive name '\.\./evil\.keras'",
        ),
        (
            lambda files, models: files.update({"notes.txt": models.deep_suffix}),
            r"'notes\.txt' is not in the package layout",
        ),
        (
            lambda files, models: files.update({BASE_FILE: models.deep_suffix}),
            r"'base/weights\.h5': the manifest says sha256",
        ),
        (
            lambda files, models: files.update({BASE_FILE: Path("/nonexistent/weights.h5")}),
            r"local file '/nonexistent/weights\.h5' for 'base/weights\.h5' does not exist",
        ),
    ],
)
def test_write_refuses_inconsistent_inputs(
    files_change: Callable[[dict[str, Path], Models], object],
    message: str,
    models: Models,
    tmp_path: Path,
) -> None:
    manifest = make_manifest(
        [candidate("input", models.input_suffix), candidate(DEEP_CUT, models.deep_suffix)],
        base_weights=models.base_weights,
    )
    files = {
        candidate_archive_name("input"): models.input_suffix,
        candidate_archive_name(DEEP_CUT): models.deep_suffix,
        BASE_FILE: models.base_weights,
    }
    files_change(files, models)
    out = tmp_path / "out" / "x.mpkg"
    with pytest.raises(PackageError, match=message):
        write_package(out, manifest, files)
    assert leftovers(out.parent) == []


def test_write_refuses_a_package_the_reader_would_refuse(models: Models, tmp_path: Path) -> None:
    manifest = make_manifest([candidate(DEEP_CUT, models.deep_suffix)])
    files = {candidate_archive_name(DEEP_CUT): models.deep_suffix}
    with pytest.raises(PackageError, match="over the per-member limit of 100"):
        write_package(
            tmp_path / "x.mpkg", manifest, files, limits=PackageLimits(max_member_bytes=100)
        )
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, OSError])
def test_a_failure_mid_write_leaves_the_previous_package_intact(
    interrupt: type[BaseException],
    models: Models,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = write_good_package(models, tmp_path / "trains.mpkg")
    before = out.read_bytes()
    real_entry = package_module._regular_entry
    entries: list[str] = []

    def failing_entry(name: str, timestamp: tuple[int, int, int, int, int, int]) -> zipfile.ZipInfo:
        entries.append(name)
        if len(entries) == 3:  # manifest and one model already written to the temp file
            raise interrupt("interrupted while writing")
        return real_entry(name, timestamp)

    monkeypatch.setattr(package_module, "_regular_entry", failing_entry)
    with pytest.raises(interrupt, match="interrupted"):
        write_good_package(models, out)
    assert len(entries) == 3
    assert leftovers(tmp_path) == ["trains.mpkg"]
    assert out.read_bytes() == before


def test_a_failure_before_the_rename_leaves_no_package(
    models: Models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_fsync(descriptor: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(KeyboardInterrupt):
        write_good_package(models, tmp_path / "trains.mpkg")
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("candidates/a.keras", None),
        ("manifest.json", None),
        ("", "empty name"),
        ("../a", "parent-directory component '..'"),
        ("a/../../b", "parent-directory component '..'"),
        ("/abs", "absolute path"),
        ("a\\b", "backslash in the name"),
        ("C:/x", "drive letter or colon in the name"),
        ("a//b", "empty or '.' path component"),
        ("./a", "empty or '.' path component"),
        ("a\x00b", "control character in the name"),
    ],
)
def test_unsafe_names(name: str, reason: str | None) -> None:
    assert package_module._unsafe_name_reason(name) == reason


def test_candidate_archive_name_refuses_odd_cut_points() -> None:
    assert candidate_archive_name("mixed7") == "candidates/mixed7.keras"
    with pytest.raises(InvalidParameterError, match="cut_point"):
        candidate_archive_name("../etc/passwd")


def test_write_refuses_what_json_cannot_carry(models: Models, tmp_path: Path) -> None:
    manifest = make_manifest([candidate(DEEP_CUT, models.deep_suffix)])
    manifest.event_stats.event_length_s = float("inf")
    files = {candidate_archive_name(DEEP_CUT): models.deep_suffix}
    with pytest.raises(PackageError, match=r"event_stats\.event_length_s"):
        write_package(tmp_path / "x.mpkg", manifest, files)
    assert leftovers(tmp_path) == []


def test_write_refuses_an_archive_the_reader_would_call_a_bomb(
    models: Models, tmp_path: Path
) -> None:
    zeros = tmp_path / "zeros.h5"
    zeros.write_bytes(bytes(2 * 1024 * 1024))
    manifest = make_manifest([candidate(DEEP_CUT, models.deep_suffix)], base_weights=zeros)
    files = {candidate_archive_name(DEEP_CUT): models.deep_suffix, BASE_FILE: zeros}
    out = tmp_path / "out" / "x.mpkg"
    with pytest.raises(PackageError, match=r"written package member 'base/weights\.h5' expands"):
        write_package(out, manifest, files)
    assert leftovers(out.parent) == []
    assert write_package(out, manifest, files, limits=PackageLimits(max_ratio=10_000)) == out
    assert stat.S_IMODE(out.stat().st_mode) == 0o644

"""The clinician's command: one scan or many with one bundle, each a label volume on its scan's grid,
an overlay picture and a report, all or nothing per scan; start-up (imports, network, weights) paid
once for the run."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from common.bundle import bundle_folder, read_metadata, read_overrides
from common.cli.cohort import Job, find_jobs
from common.cli.dicom_seg import seg_source_problem
from common.cli.dicomweb import is_dicomweb, store
from common.cli.scan import Scan
from common.cli.scan_outputs import bundle_facts, output_names, settings_digest, verified_report, write_outputs, write_report
from common.cli.segmenter import Segmenter, backend_description, choose_device
from common.errors import InputError, brief_message, find_input_error, first_line
from common.io import write_atomically

logger = logging.getLogger(__name__)
SUMMARY = "summary.csv"


def open_output_folder(output: Path) -> tuple[Path, bool]:
    """A fresh hidden staging folder inside ``output`` (created if needed), and whether ``output``
    was created here. :class:`InputError` when ``output`` cannot be written."""
    created = not output.exists()
    try:
        output.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".segment-", dir=output)), created
    except OSError as err:
        raise InputError(f"{output}: cannot write the outputs there ({err.strerror or first_line(err)})") from err


@contextmanager
def errors_naming(originals: dict[Path, str]) -> Iterator[None]:
    """Bad-input errors raised on the staged copies (wrapped by MONAI or not) name what the user gave instead."""
    try:
        yield
    except Exception as err:
        input_error = find_input_error(err)
        if input_error is None:
            raise
        message = brief_message(input_error)
        for copy, original in originals.items():
            message = message.replace(str(copy.absolute()), original)
        raise InputError(message) from err


@dataclass
class Prepared:
    """A job's scan staged and pre-processed, ready for the network (or why it could not be)."""

    job: Job
    staging: Path
    scan: Scan | None = None
    item: dict | None = None
    error: BaseException | None = None
    seconds: float = 0.0


@dataclass
class Segmented:
    """A scan segmented: its label volume (in its staging folder), the device that ran, why no DICOM
    SEG can be made (``None``: one can), and the seconds of its windows and its post-processing."""

    label_path: Path
    device: Any
    seg_problem: str | None
    windows: float
    postprocessing: float


@dataclass
class Outcome:
    """A row of the summary: the scan, ``done``, ``skipped`` or ``failed``, its seconds, and its
    report or its error."""

    scan: str
    status: str
    seconds: float
    output: str


class Run:
    """One ``segment`` run: the bundle set up once, then job after job, each staged into its own
    folder under the output's hidden staging folder and moved into the output only when all its
    files are written (and, with ``--upload``, its DICOM SEG stored)."""

    def __init__(self, segmenter: Segmenter, folder: Path, metadata: dict[str, Any], weights: Path, destination: Path,
                 workspace: Path, upload: bool, backend: str, settings: dict[str, Any]) -> None:
        self.segmenter, self.folder, self.metadata, self.weights = segmenter, folder, metadata, weights
        self.destination, self.workspace, self.upload = destination, workspace, upload
        self.settings_sha256 = settings_digest(settings, backend)

    def prepare(self, job: Job, index: int) -> Prepared:
        """Stage ``job``'s scan (a private copy, or pulled from the server) and pre-process it; an
        error is kept for :meth:`segment` to raise, naming what the user gave."""
        started = time.perf_counter()
        prepared = Prepared(job, self.workspace / f"scan-{index:05d}")
        try:
            prepared.staging.mkdir()
            prepared.scan = job.staged(prepared.staging / "input")
            with errors_naming({prepared.scan.source: job.source}):
                prepared.item = self.segmenter.preprocess(prepared.scan)
        except Exception as err:  # noqa: BLE001 - every failure of one scan is that scan's, raised by segment()
            prepared.error = err
        prepared.seconds = time.perf_counter() - started
        return prepared

    def segment(self, prepared: Prepared) -> Segmented:
        """Segment a prepared scan: its label volume moved into the scan's staging folder (so the
        next scan's cannot meet it), the device that ran, and the seconds of its windows and its
        post-processing."""
        if prepared.error is not None:
            raise prepared.error
        job, scan, started = prepared.job, prepared.scan, time.perf_counter()
        seg_problem = seg_source_problem(scan.files) if scan.series_uid is not None else "the input is not DICOM"
        if self.upload and seg_problem:
            raise InputError(f"{job.source}: no DICOM SEG can be made to upload: {seg_problem}")
        if scan.series_uid is not None and seg_problem:
            logger.info(f"no DICOM SEG: {seg_problem}")
        with errors_naming({self.segmenter.weights: str(self.weights), scan.source: job.source}):
            label_path, device = self.segmenter.segment(prepared.item)
        prepared.item = None  # the pre-processed scan is no longer needed
        label_path = Path(shutil.move(label_path, prepared.staging / label_path.name))
        windows = self.segmenter.windows_seconds
        return Segmented(label_path, device, seg_problem, windows, time.perf_counter() - started - windows)

    def write(self, prepared: Prepared, segmented: Segmented) -> Path:
        """Write a segmented scan's outputs and report, store its SEG when asked, and move them all
        into the output folder; the report's path."""
        started, job, scan, staging = time.perf_counter(), prepared.job, prepared.scan, prepared.staging
        outputs, label = write_outputs(staging, segmented.label_path, scan, job.name, self.segmenter.class_names, self.metadata,
                                       not segmented.seg_problem)
        seconds = {"reading": prepared.seconds, "windows": segmented.windows, "postprocessing": segmented.postprocessing,
                   "outputs": time.perf_counter() - started}
        write_report(outputs, label, scan, job.source, self.segmenter.class_names, {
            "bundle": bundle_facts(self.folder, self.metadata, self.weights, self.segmenter.weights_sha256),
            "uploaded_to": job.study[0] if self.upload and job.study else None,
            "device": str(segmented.device),
            "backend": backend_description(self.segmenter.network),
            "settings_sha256": self.settings_sha256,
            "runtime_s": round(sum(seconds.values()), 2),
            "timing_s": {step: round(value, 2) for step, value in seconds.items()},
        })
        if self.upload:
            store(job.study[0], outputs["dicom_seg"])
        for path in outputs.values():
            os.replace(path, self.destination / path.name)
        return self.destination / outputs["report"].name

    def verified(self, job: Job) -> Path | None:
        """The report of ``job`` when the output folder holds its complete, verified outputs."""
        if not (self.destination / output_names(job.name, False)["report"]).is_file():
            return None
        try:
            scan_sha256 = None if job.study else job.local_scan().sha256()
        except InputError:
            return None
        return verified_report(self.destination, job.name, self.segmenter.weights_sha256, self.settings_sha256, scan_sha256)

    def one(self, job: Job) -> Path:
        """A run of one scan: its outputs, or its error (nothing written)."""
        found = self.verified(job)
        if found is not None:
            logger.info(f"{job.label}: outputs complete and verified, kept: {found}")
            return found
        prepared = self.prepare(job, 0)
        try:
            return self.write(prepared, self.segment(prepared))
        finally:
            shutil.rmtree(prepared.staging, ignore_errors=True)

    def many(self, jobs: list[Job], read_ahead: bool = True) -> list[Outcome]:
        """A run of many scans: each done, skipped (its outputs already complete and verified) or
        failed on its own. The network segments one scan after another while, with ``read_ahead``,
        a thread reads and pre-processes the next scan (two scans in memory instead of one), and
        another writes the previous one's outputs."""
        outcomes: dict[int, Outcome] = {}
        for index, job in enumerate(jobs):
            found = self.verified(job)
            if found is not None:
                outcomes[index] = Outcome(job.label, "skipped", 0.0, found.name)
        pending = [(index, job) for index, job in enumerate(jobs) if index not in outcomes]
        writes: dict[int, tuple[Prepared, Future]] = {}
        with ThreadPoolExecutor(max_workers=1) as reader, ThreadPoolExecutor(max_workers=1) as writer:
            ahead: Future | None = reader.submit(self.prepare, pending[0][1], pending[0][0]) if pending else None
            for turn, (index, job) in enumerate(tqdm(pending, desc="scans", unit="scan", position=0)):
                prepared = ahead.result() if ahead is not None else self.prepare(job, index)
                following = pending[turn + 1] if turn + 1 < len(pending) else None
                ahead = reader.submit(self.prepare, following[1], following[0]) if following and read_ahead else None
                try:
                    writes[index] = (prepared, writer.submit(self.write, prepared, self.segment(prepared)))
                except Exception as err:  # noqa: BLE001 - a bad scan stops only itself
                    outcomes[index] = self.failed(prepared, err)
            for index, (prepared, written) in writes.items():
                try:
                    report = written.result()
                    outcomes[index] = Outcome(prepared.job.label, "done", round(json.loads(report.read_text())["runtime_s"], 2), report.name)
                except Exception as err:  # noqa: BLE001 - a bad scan stops only itself
                    outcomes[index] = self.failed(prepared, err)
                shutil.rmtree(prepared.staging, ignore_errors=True)
        return [outcomes[index] for index in range(len(jobs))]

    @staticmethod
    def failed(prepared: Prepared, err: Exception) -> Outcome:
        """The summary row of a scan that failed, its one-line error printed; nothing of it stays."""
        shutil.rmtree(prepared.staging, ignore_errors=True)
        input_error = find_input_error(err)
        message = brief_message(input_error) if input_error else f"{prepared.job.label}: {type(err).__name__}: {first_line(err)}"
        tqdm.write(f"error: {message}", file=sys.stderr)
        return Outcome(prepared.job.label, "failed", round(prepared.seconds, 2), message)


def write_summary(path: Path, outcomes: list[Outcome]) -> str:
    """``summary.csv`` (scan, status, seconds, output), written atomically; the same as a table."""
    rows = [["scan", "status", "seconds", "output"], *([o.scan, o.status, f"{o.seconds:.2f}", o.output] for o in outcomes)]
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    write_atomically(path, lambda staging: Path(staging).write_text(text.getvalue()))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def segment(
    *,
    bundle: str,
    input: str,
    output: str,
    series: str | None = None,
    study: str | None = None,
    upload: bool = False,
    device: str | None = None,
    checkpoint: str | None = None,
    overrides: str | None = None,
    backend: str = "torch",
    read_ahead: bool = True,
) -> str:
    """Segment one scan or many with one bundle; for each, write ``<name>_seg.nii.gz``,
    ``<name>_overlay.png`` and ``<name>_report.json`` into ``output`` (and ``<name>_seg.dcm``, a
    DICOM Segmentation, for a DICOM series), and return the report's path (one scan) or the
    summary's (many).

    The label volume is on the scan's own grid, with its affine; the DICOM SEG references the source
    series and its frame of reference, one segment per class, one frame per source slice. The
    report gives the volume in mL of each structure, the bundle's name, version and checksums, the
    scan's checksum, every output's checksum, the date, the device and the run time. Each scan and
    the weights are first copied into a private staging folder and hashed there: the checksums are
    those of exactly the bytes used. A DICOM series is refused when its slices do not make one
    volume (missing slice, uneven spacing, mixed orientations). The weights say what input they
    expect (``input_contract``; the shipped brain bundles: a brain-extracted T1, zero outside the
    brain, as FSL BET, SynthStrip or HD-BET make it; a whole head is refused), and the model card
    says it in words.

    Many scans (a folder, a list, several series) pay the start-up once: imports, network and
    weights (and ONNX Runtime, when asked) are set up once, then each scan costs its reading,
    windows and writing; the next scan is read, and the previous one's outputs written, while the
    current one's windows run. A bad scan stops only itself: its one-line error is printed, nothing
    of it is left in ``output``, and the run goes on; ``output/summary.csv`` (scan, status, seconds, output) is written and printed at the
    end, and the exit status is non-zero if any scan failed. A scan whose outputs in ``output`` are
    complete and verified (made from the same scan, weights and settings, every file matching the
    checksum in its report) is skipped, so an interrupted run goes on where it stopped. A run of
    one scan writes nothing at all when it fails.

    Args:
        bundle: the bundle folder, e.g. ``bundles/unetr``.
        input: a scan (NIfTI, MHA, NRRD); a folder: the volume files in it and every DICOM series
            under it; a ``.txt`` file listing scans or folders, one a line (relative to the list's
            folder); or the root address of a DICOMweb server (starting with ``http``, e.g.
            Orthanc's ``/dicom-web``) with ``--study``: every image series of the study.
            Credentials from ``DICOMWEB_USERNAME`` and ``DICOMWEB_PASSWORD`` or a netrc file, never
            in the address.
        output: folder for the outputs (created if needed).
        series: one DICOM series instance UID of the folder or study, instead of all of them.
        study: study instance UID on the DICOMweb server of ``input``.
        upload: store each DICOM SEG back on the DICOMweb server of ``input`` (STOW-RS).
        device: ``cpu``, ``cuda`` or ``cuda:N``; default: the first GPU when there is one, else the CPU.
        checkpoint: weights to use instead of the bundle's ``models/model.pt``; the classes,
            channels, spacing, normalisation and network sizes they were trained with are read
            from them.
        overrides: a JSON file of config keys to change (e.g. ``sw_batch_size``); keys that
            contradict the weights (another spacing, other classes ...) are refused by name.
        backend: ``torch`` (eager PyTorch, the default), ``onnx`` (ONNX Runtime on the CPU, with the
            ``model.onnx`` that ``python -m common export`` wrote beside the weights and that was
            exported from exactly them), or ``auto``: where ``onnx`` can run, both race on the
            first four windows and the faster runs the rest (the report gives both times), else
            ``torch``. Setting up and timing both costs seconds that a scan of few windows does not
            win back (docs/benchmarks.md, "What segment costs").
        read_ahead: in a run of many scans, read and pre-process the next scan while the current
            one's windows run (the default); ``False`` holds one scan in memory at a time.
    """
    folder = bundle_folder(bundle)
    metadata = read_metadata(folder)
    remote = is_dicomweb(input)
    if remote and study is None:
        raise InputError(f"{input}: a DICOMweb server; say which study with --study UID")
    if upload and not remote:
        raise InputError(f"{input}: --upload stores the DICOM SEG on the DICOMweb server given as --input; this is a local scan")
    jobs, single = find_jobs(input, series, study, remote)
    chosen = choose_device(device)
    settings = read_overrides(overrides)
    weights = Path(checkpoint) if checkpoint else folder / "models" / "model.pt"
    if not weights.is_file():
        raise InputError(f"{weights}: checkpoint not found; train the bundle first or pass --checkpoint")
    destination = Path(output).absolute()
    workspace, created = open_output_folder(destination)
    segmenter = None
    try:
        with errors_naming({workspace / "weights" / weights.name: str(weights)}):
            segmenter = Segmenter(folder, weights, chosen, settings, backend, workspace)
        logger.info(f"segmenting {len(jobs)} scan(s) with {metadata['name']} {metadata['version']} on {chosen}")
        run = Run(segmenter, folder, metadata, weights, destination, workspace, upload, backend, settings)
        if single:
            report = run.one(jobs[0])
            logger.info(f"outputs in {destination}")
            return str(report)
        outcomes = run.many(jobs, read_ahead)
    except BaseException:
        shutil.rmtree(workspace, ignore_errors=True)
        if created and (single or not any(destination.iterdir())):
            shutil.rmtree(destination, ignore_errors=True)
        raise
    finally:
        if segmenter is not None:
            segmenter.close()
        shutil.rmtree(workspace, ignore_errors=True)
    summary = destination / SUMMARY
    print(write_summary(summary, outcomes))
    failed = [outcome for outcome in outcomes if outcome.status == "failed"]
    if failed:
        raise InputError(f"{summary}: {len(failed)} of {len(outcomes)} scans failed ({', '.join(o.scan for o in failed[:3])}"
                         f"{' ...' if len(failed) > 3 else ''})")
    return str(summary)
